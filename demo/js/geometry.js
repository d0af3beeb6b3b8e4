// Plane geometry for the scan (no DOM): the homography from four point pairs, the mapping of
// model-input corners back to the camera frame, and the perspective warp of the card.
//
// Coordinates: pixel-index, as corner_annotations.json (the centre of the top-left pixel is
// (0, 0), so an image of width W spans -0.5 .. W - 0.5). Points are flat arrays
// [x0, y0, x1, y1, x2, y2, x3, y3] in the order TL, TR, BR, BL.

// A 63 x 88 mm card at 10 px per mm: the default scan size (portrait, the TL-TR side on top).
export const SCAN_WIDTH = 630;
export const SCAN_HEIGHT = 880;

/**
 * The 3x3 homography H (row-major Float64Array(9), H[8] = 1) with H(src[i]) = dst[i] for the four
 * point pairs (flat [x0, y0, ..., x3, y3] each). Solves the 8x8 linear system of the direct
 * linear transform by Gaussian elimination with partial pivoting.
 */
export function homography(src, dst, out = new Float64Array(9), a = new Float64Array(8 * 9)) {
  // a: 8 rows of [8 coefficients | right-hand side]; out and a may be kept by a caller in a loop.
  for (let i = 0; i < 4; i += 1) {
    const x = src[2 * i]; const y = src[2 * i + 1];
    const u = dst[2 * i]; const v = dst[2 * i + 1];
    const r0 = 18 * i; const r1 = r0 + 9;
    a[r0] = x; a[r0 + 1] = y; a[r0 + 2] = 1; a[r0 + 3] = 0; a[r0 + 4] = 0; a[r0 + 5] = 0;
    a[r0 + 6] = -u * x; a[r0 + 7] = -u * y; a[r0 + 8] = u;
    a[r1] = 0; a[r1 + 1] = 0; a[r1 + 2] = 0; a[r1 + 3] = x; a[r1 + 4] = y; a[r1 + 5] = 1;
    a[r1 + 6] = -v * x; a[r1 + 7] = -v * y; a[r1 + 8] = v;
  }
  for (let col = 0; col < 8; col += 1) {
    let pivot = col;
    for (let r = col + 1; r < 8; r += 1) if (Math.abs(a[r * 9 + col]) > Math.abs(a[pivot * 9 + col])) pivot = r;
    if (Math.abs(a[pivot * 9 + col]) < 1e-12) throw new RangeError('degenerate quadrilateral: no homography');
    if (pivot !== col) {
      for (let c = 0; c < 9; c += 1) {
        const t = a[col * 9 + c]; a[col * 9 + c] = a[pivot * 9 + c]; a[pivot * 9 + c] = t;
      }
    }
    for (let r = 0; r < 8; r += 1) {
      if (r === col) continue;
      const f = a[r * 9 + col] / a[col * 9 + col];
      if (f === 0) continue;
      for (let c = col; c < 9; c += 1) a[r * 9 + c] -= f * a[col * 9 + c];
    }
  }
  for (let r = 0; r < 8; r += 1) out[r] = a[r * 9 + 8] / a[r * 9 + r];
  out[8] = 1;
  return out;
}

/** H(x, y) as [x', y']. */
export function applyHomography(h, x, y) {
  const w = h[6] * x + h[7] * y + h[8];
  return [(h[0] * x + h[1] * y + h[2]) / w, (h[3] * x + h[4] * y + h[5]) / w];
}

/** The inverse of a 3x3 matrix (row-major), scaled so that its [8] is 1 when that is non-zero. */
export function invert3x3(m) {
  const [a, b, c, d, e, f, g, h, i] = m;
  const A = e * i - f * h; const B = -(d * i - f * g); const C = d * h - e * g;
  const det = a * A + b * B + c * C;
  if (Math.abs(det) < 1e-15) throw new RangeError('singular matrix');
  const inv = new Float64Array([
    A, -(b * i - c * h), b * f - c * e,
    B, a * i - c * g, -(a * f - c * d),
    C, -(a * h - b * g), a * e - b * d,
  ]);
  const s = inv[8] !== 0 ? 1 / inv[8] : 1 / det;
  for (let k = 0; k < 9; k += 1) inv[k] *= s;
  return inv;
}

/**
 * Model-input points (pixel-index in the modelWidth x modelHeight input) -> pixel-index points in
 * the camera frame whose crop {sx, sy, sw, sh} the model saw scaled to modelWidth x modelHeight.
 * Per axis: continuous = index + 0.5 scales by sw / modelWidth (sh / modelHeight) and shifts by
 * the crop offset. Writes into `out` (default: a new array) and returns it.
 */
export function cropToFrame(points, crop, modelWidth, modelHeight, out = new Float64Array(points.length)) {
  const kx = crop.sw / modelWidth;
  const ky = crop.sh / modelHeight;
  for (let i = 0; i < points.length; i += 2) {
    out[i] = crop.sx + (points[i] + 0.5) * kx - 0.5;
    out[i + 1] = crop.sy + (points[i + 1] + 0.5) * ky - 0.5;
  }
  return out;
}

/**
 * The corners reordered so that the scan comes out portrait: a card lying on its side (its
 * TL-TR and BR-BL sides longer than the other two) starts from its BL corner instead, which
 * turns the scan a quarter clockwise rather than squashing it. TL, TR, BR, BL either way.
 */
export function portraitOrder(points) {
  const side = (i, j) => Math.hypot(points[2 * j] - points[2 * i], points[2 * j + 1] - points[2 * i + 1]);
  const horizontal = side(0, 1) + side(3, 2);
  const vertical = side(1, 2) + side(0, 3);
  if (horizontal <= vertical) return Array.from(points);
  const out = [];
  for (const k of [3, 0, 1, 2]) out.push(points[2 * k], points[2 * k + 1]);
  return out;
}

/**
 * Perspective warp of the quadrilateral `quad` (pixel-index TL, TR, BR, BL in `src`) onto the whole
 * of `dst` (TL -> top-left corner, ...): bilinear sampling, edge pixels repeated at the border,
 * black outside the source. src and dst: {data: RGBA bytes, width, height}; dst is filled in place.
 */
export function warpQuad(src, quad, dst) {
  const W = dst.width; const H = dst.height;
  // Continuous coordinates on both sides: dst spans 0..W x 0..H, the quad's corners are index + 0.5.
  const from = [0, 0, W, 0, W, H, 0, H];
  const to = Array.from(quad, (v) => v + 0.5);
  const h = homography(from, to);
  const sw = src.width; const sh = src.height;
  const s = src.data; const d = dst.data;
  for (let j = 0; j < H; j += 1) {
    const v = j + 0.5;
    // Numerators and denominator are affine in u: start at u = 0.5 and step by one column.
    let nx = h[0] * 0.5 + h[1] * v + h[2];
    let ny = h[3] * 0.5 + h[4] * v + h[5];
    let nw = h[6] * 0.5 + h[7] * v + h[8];
    let o = j * W * 4;
    for (let i = 0; i < W; i += 1, o += 4) {
      const x = nx / nw - 0.5; // source pixel-index
      const y = ny / nw - 0.5;
      nx += h[0]; ny += h[3]; nw += h[6];
      if (!(x > -1 && y > -1 && x < sw && y < sh)) {
        d[o] = 0; d[o + 1] = 0; d[o + 2] = 0; d[o + 3] = 255;
        continue;
      }
      const x0 = Math.floor(x); const y0 = Math.floor(y);
      const fx = x - x0; const fy = y - y0;
      const xa = x0 < 0 ? 0 : x0; const xb = x0 + 1 >= sw ? sw - 1 : x0 + 1;
      const ya = y0 < 0 ? 0 : y0; const yb = y0 + 1 >= sh ? sh - 1 : y0 + 1;
      const p00 = (ya * sw + xa) * 4; const p01 = (ya * sw + xb) * 4;
      const p10 = (yb * sw + xa) * 4; const p11 = (yb * sw + xb) * 4;
      const w00 = (1 - fx) * (1 - fy); const w01 = fx * (1 - fy);
      const w10 = (1 - fx) * fy; const w11 = fx * fy;
      d[o] = s[p00] * w00 + s[p01] * w01 + s[p10] * w10 + s[p11] * w11;
      d[o + 1] = s[p00 + 1] * w00 + s[p01 + 1] * w01 + s[p10 + 1] * w10 + s[p11 + 1] * w11;
      d[o + 2] = s[p00 + 2] * w00 + s[p01 + 2] * w01 + s[p10 + 2] * w10 + s[p11 + 2] * w11;
      d[o + 3] = 255;
    }
  }
  return dst;
}
