// Does a card the corner model found agree with the segmentation mask? The same rules, constants and
// sampling as train/scanning/agreement.py (tests/test_agreement.py runs both on the same cases):
// 1. inside is card (MIN_FILL of a grid in the quad shrunk by INNER_SHRINK);
// 2. no background runs across it (every interior grid row and column at least MIN_LINE_FILL card);
// 3. just outside each of its sides (MIN_BOUNDED_SIDES of 4) lies background, the frame's edge or
//    another card found (on MIN_BOUNDED of the side);
// 4. it holds no other card found (CONTAIN_SHARE of that card inside it).
// Quads: Float32Array/Float64Array(8) TL, TR, BR, BL in continuous px of the 480x640 mask. No DOM,
// no allocation per call beyond the result object (none when the caller passes one).

import { homography } from './geometry.js';
import { MASK_THRESHOLD, MODEL_HEIGHT, MODEL_WIDTH } from './image-utils.js';

export const INNER_SHRINK = 0.08;
export const GRID_X = 15;
export const GRID_Y = 21;
export const MIN_FILL = 0.85;
export const MIN_LINE_FILL = 0.5;
export const SIDE_OFFSETS_PX = [4, 8, 12];
export const SIDE_SAMPLES = 12;
export const MIN_BOUNDED = 0.6;
export const MIN_BOUNDED_SIDES = 4;
export const CONTAIN_SHARE = 0.7;
export const MIN_AREA_PX = 64; // a quad smaller than 8 x 8 px, flat or crossed, is no card

const UNIT_SQUARE = [0, 0, 1, 0, 1, 1, 0, 1];
const gridX = new Float64Array(GRID_X * GRID_Y);
const gridY = new Float64Array(GRID_X * GRID_Y);
const gridP = new Float64Array(GRID_X * GRID_Y); // probability, NaN outside the frame
const otherX = new Float64Array(GRID_X * GRID_Y);
const otherY = new Float64Array(GRID_X * GRID_Y);
const bounded = new Uint8Array(SIDE_SAMPLES);
const corners = new Float64Array(8);
const hom = new Float64Array(9);
const homScratch = new Float64Array(72);

/** Bilinear card probability at continuous (x, y) px; NaN outside the frame. */
export function sample(prob, x, y, width = MODEL_WIDTH, height = MODEL_HEIGHT) {
  const px = x - 0.5; const py = y - 0.5; // pixel-index
  if (!(px >= -0.5 && px <= width - 0.5 && py >= -0.5 && py <= height - 0.5)) return NaN;
  const x0 = Math.min(Math.max(Math.floor(px), 0), width - 1);
  const y0 = Math.min(Math.max(Math.floor(py), 0), height - 1);
  const x1 = Math.min(x0 + 1, width - 1); const y1 = Math.min(y0 + 1, height - 1);
  const fx = Math.min(Math.max(px - x0, 0), 1); const fy = Math.min(Math.max(py - y0, 0), 1);
  const top = prob[y0 * width + x0] * (1 - fx) + prob[y0 * width + x1] * fx;
  const bottom = prob[y1 * width + x0] * (1 - fx) + prob[y1 * width + x1] * fx;
  return top * (1 - fy) + bottom * fy;
}

/** True when (x, y) lies inside the convex quad (8 values), either winding. */
export function insideQuad(q, x, y) {
  let pos = true; let neg = true;
  for (let k = 0; k < 4; k += 1) {
    const j = (k + 1) % 4;
    const c = (q[2 * j] - q[2 * k]) * (y - q[2 * k + 1]) - (q[2 * j + 1] - q[2 * k + 1]) * (x - q[2 * k]);
    if (c < 0) pos = false;
    if (c > 0) neg = false;
  }
  return pos || neg;
}

export function quadArea(q) {
  let a = 0;
  for (let k = 0; k < 4; k += 1) {
    const j = (k + 1) % 4;
    a += q[2 * k] * q[2 * j + 1] - q[2 * j] * q[2 * k + 1];
  }
  return Math.abs(a) / 2;
}

/** Convex, not crossed, and at least MIN_AREA_PX: the only quads the rules can judge (a detector's
 * empty or collapsed slot has no homography). */
export function isCardShaped(q) {
  let pos = 0; let neg = 0;
  for (let k = 0; k < 4; k += 1) {
    if (!Number.isFinite(q[2 * k]) || !Number.isFinite(q[2 * k + 1])) return false;
    const j = (k + 1) % 4; const l = (k + 2) % 4;
    const ex = q[2 * j] - q[2 * k]; const ey = q[2 * j + 1] - q[2 * k + 1];
    const fx = q[2 * l] - q[2 * j]; const fy = q[2 * l + 1] - q[2 * j + 1];
    const turn = ex * fy - ey * fx;
    if (turn > 0) pos += 1; else if (turn < 0) neg += 1;
  }
  return quadArea(q) >= MIN_AREA_PX && (pos === 4 || neg === 4);
}

/** The grid of points in quad q (shrunk by `shrink` of its size on each side), rows down the card. */
function gridPoints(q, shrink, xs, ys) {
  for (let i = 0; i < 8; i += 1) corners[i] = q[i];
  const h = homography(UNIT_SQUARE, corners, hom, homScratch);
  for (let r = 0; r < GRID_Y; r += 1) {
    const v = shrink + ((1 - 2 * shrink) * r) / (GRID_Y - 1);
    for (let c = 0; c < GRID_X; c += 1) {
      const u = shrink + ((1 - 2 * shrink) * c) / (GRID_X - 1);
      const w = h[6] * u + h[7] * v + h[8];
      xs[r * GRID_X + c] = (h[0] * u + h[1] * v + h[2]) / w;
      ys[r * GRID_X + c] = (h[3] * u + h[4] * v + h[5]) / w;
    }
  }
}

/**
 * The rules for quad q against prob (Float32Array(640 * 480)), `others` the other quads found in
 * the frame (an array of 8-value arrays). Returns {fill, minLine, sides: [4], contains, ok}, written
 * into `out` when given (the video loop passes one it keeps, so checking allocates nothing).
 */
export function agreement(prob, q, others = [], out = null) {
  const result = out || { fill: 0, minLine: 0, sides: [0, 0, 0, 0], contains: 0, ok: false };
  if (!isCardShaped(q)) {
    result.fill = 0; result.minLine = 0; result.contains = 0; result.ok = false;
    result.sides.fill(0);
    return result;
  }
  gridPoints(q, INNER_SHRINK, gridX, gridY);
  let seen = 0; let card = 0;
  for (let i = 0; i < gridP.length; i += 1) {
    const p = sample(prob, gridX[i], gridY[i]);
    gridP[i] = p;
    if (!Number.isNaN(p)) { seen += 1; if (p >= MASK_THRESHOLD) card += 1; }
  }
  const fill = seen ? card / seen : 0;
  let minLine = Infinity; let lines = 0;
  // Columns first, then rows, the interior ones mostly in the frame (as agreement.py).
  for (let c = 1; c < GRID_X - 1; c += 1) {
    let s = 0; let k = 0;
    for (let r = 0; r < GRID_Y; r += 1) {
      const p = gridP[r * GRID_X + c];
      if (!Number.isNaN(p)) { s += 1; if (p >= MASK_THRESHOLD) k += 1; }
    }
    if (s / GRID_Y >= 0.5) { minLine = Math.min(minLine, k / s); lines += 1; }
  }
  for (let r = 1; r < GRID_Y - 1; r += 1) {
    let s = 0; let k = 0;
    for (let c = 0; c < GRID_X; c += 1) {
      const p = gridP[r * GRID_X + c];
      if (!Number.isNaN(p)) { s += 1; if (p >= MASK_THRESHOLD) k += 1; }
    }
    if (s / GRID_X >= 0.5) { minLine = Math.min(minLine, k / s); lines += 1; }
  }
  if (!lines) minLine = 0;
  let cx = 0; let cy = 0;
  for (let k = 0; k < 4; k += 1) { cx += q[2 * k] / 4; cy += q[2 * k + 1] / 4; }
  const { sides } = result;
  for (let k = 0; k < 4; k += 1) {
    const j = (k + 1) % 4;
    const ax = q[2 * k]; const ay = q[2 * k + 1];
    const dx = q[2 * j] - ax; const dy = q[2 * j + 1] - ay;
    const len = Math.max(Math.hypot(dx, dy), 1e-9);
    let nx = dy / len; let ny = -dx / len;
    if (nx * (ax + dx / 2 - cx) + ny * (ay + dy / 2 - cy) < 0) { nx = -nx; ny = -ny; } // outwards
    bounded.fill(0);
    for (const off of SIDE_OFFSETS_PX) {
      for (let i = 0; i < SIDE_SAMPLES; i += 1) {
        if (bounded[i]) continue;
        const t = 0.15 + (0.7 * i) / (SIDE_SAMPLES - 1);
        const x = ax + t * dx + off * nx; const y = ay + t * dy + off * ny;
        const p = sample(prob, x, y);
        let b = Number.isNaN(p) || p < MASK_THRESHOLD;
        for (let o = 0; !b && o < others.length; o += 1) b = insideQuad(others[o], x, y);
        if (b) bounded[i] = 1;
      }
    }
    let n = 0;
    for (let i = 0; i < SIDE_SAMPLES; i += 1) n += bounded[i];
    sides[k] = n / SIDE_SAMPLES;
  }
  const area = quadArea(q);
  let contains = 0;
  for (const other of others) {
    const otherArea = quadArea(other);
    if (!(otherArea < 0.8 * area && isCardShaped(other))) continue;
    gridPoints(other, 0, otherX, otherY);
    let held = 0;
    for (let i = 0; i < otherX.length; i += 1) if (insideQuad(q, otherX[i], otherY[i])) held += 1;
    if (held / otherX.length >= CONTAIN_SHARE) contains += 1;
  }
  let boundedSides = 0;
  for (const s of sides) if (s >= MIN_BOUNDED) boundedSides += 1;
  result.fill = fill;
  result.minLine = minLine;
  result.contains = contains;
  result.ok = fill >= MIN_FILL && minLine >= MIN_LINE_FILL && boundedSides >= MIN_BOUNDED_SIDES && contains === 0;
  return result;
}
