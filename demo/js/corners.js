// The corner models' answers as the app uses them (no DOM): which card the app takes, following it
// with the refiner between corner model runs, the faint other cards, and the text of data-points.
//
// The app's card is the corner model's frame card (card_corners.onnx's refined `corners`: the strong
// card nearest the centre) when its centre lies in the guide and the segmentation mask agrees with
// its quad (agreement.js). Other cards the corner model found and the mask confirms are drawn faint.
// Between corner model runs, the refiner (card_corners_refiner.onnx) alone follows the app's card
// from its last corners, for up to TRACK_FRAMES frames, as long as the result moves less than
// MAX_TRACK_STEP_PX, keeps a card's shape, stays in the guide and agrees with the mask.

import { agreement } from './agreement.js';
import { GUIDE } from './auto-capture.js';

// The model card's threshold (train/exported_models/README.md): below it there is no card and
// the corners mean nothing.
export const SCORE_THRESHOLD = 0.25;
export const MAX_CARDS = 12; // card_corners.onnx's slots
// After a corner model run, the refiner alone follows the card on up to this many frames before the
// corner model looks again (for new cards, and the outlines of the others).
export const TRACK_FRAMES = 3;
// The refiner's coarse look reaches 32 px: a corner that moves further between two frames is lost.
export const MAX_TRACK_STEP_PX = 24;

function maxMove(a, b) {
  let m = 0;
  for (let i = 0; i < 8; i += 2) m = Math.max(m, Math.hypot(a[i] - b[i], a[i + 1] - b[i + 1]));
  return m;
}

function finite(q) {
  for (let i = 0; i < 8; i += 1) if (!Number.isFinite(q[i])) return false;
  return true;
}

/** The centre of q (continuous px) inside the guide's outline (pixel-index, auto-capture.js). */
export function inGuide(q) {
  const x = (q[0] + q[2] + q[4] + q[6]) / 4 - 0.5;
  const y = (q[1] + q[3] + q[5] + q[7]) / 4 - 0.5;
  return x >= GUIDE.x0 && x <= GUIDE.x1 && y >= GUIDE.y0 && y <= GUIDE.y1;
}

/** The app's card across frames. Everything is allocated once. Quads are 8 values TL, TR, BR, BL. */
export class CardTracker {
  constructor() {
    this.quads = Array.from({ length: MAX_CARDS }, () => new Float64Array(8)); // found, continuous px
    this.count = 0; // how many of quads the last corner model run found
    this.chosen = new Float64Array(8); // the app's card, continuous px
    this.others = new Float32Array(8 * MAX_CARDS); // the faint cards, pixel-index
    this.nOthers = 0;
    this.neighbours = [];
    this.check = { fill: 0, minLine: 0, sides: [0, 0, 0, 0], contains: 0, ok: false }; // agreement()'s answer
    this.reset();
  }

  reset() {
    this.on = false; // following a card
    this.frames = 0; // refiner frames since the corner model ran
    this.score = 0; // the corner model's score of the app's card
  }

  /** True when this frame's card should come from the refiner on the last corners (else the corner model). */
  get follows() {
    return this.on && this.frames < TRACK_FRAMES;
  }

  /** The cards of quads but the one at `skip`, as agreement() takes them (a reused array). */
  neighboursOf(skip) {
    this.neighbours.length = 0;
    for (let i = 0; i < this.count; i += 1) if (i !== skip) this.neighbours.push(this.quads[i]);
    return this.neighbours;
  }

  nearest(q) {
    let best = Infinity;
    let index = -1;
    for (let k = 0; k < this.count; k += 1) {
      const d = maxMove(this.quads[k], q);
      if (d < best) { best = d; index = k; }
    }
    return index;
  }

  /**
   * The corner model's outputs on this frame: cards (M * 8, continuous px) and cardScores (M), the
   * refined frame card (8) and its score; mask the frame's card probability. Returns true when the
   * app has a card (then in chosen); the faint cards are in others / nOthers.
   */
  detected(mask, cards, cardScores, refined, score) {
    this.count = 0;
    for (let k = 0; k < cardScores.length && this.count < MAX_CARDS; k += 1) {
      if (!(cardScores[k] >= SCORE_THRESHOLD)) continue;
      for (let i = 0; i < 8; i += 1) this.quads[this.count][i] = cards[8 * k + i];
      this.count += 1;
    }
    const mine = this.nearest(refined); // the frame's card among the cards found
    let found = false;
    if (score >= SCORE_THRESHOLD && finite(refined)) {
      for (let i = 0; i < 8; i += 1) this.chosen[i] = refined[i];
      found = inGuide(this.chosen) && agreement(mask, this.chosen, this.neighboursOf(mine), this.check).ok;
    }
    this.nOthers = 0;
    for (let k = 0; k < this.count; k += 1) {
      if (found && k === mine) continue;
      if (!agreement(mask, this.quads[k], this.neighboursOf(k), this.check).ok) continue;
      for (let i = 0; i < 8; i += 1) this.others[8 * this.nOthers + i] = this.quads[k][i] - 0.5;
      this.nOthers += 1;
    }
    this.on = found;
    this.frames = 0;
    this.score = found ? score : 0;
    return found;
  }

  /** The refiner's answer on this frame for the last corners (chosen): true when it still is the app's card. */
  followed(mask, refined, valid) {
    this.frames += 1;
    const ok = valid > 0.5 && finite(refined) && maxMove(refined, this.chosen) <= MAX_TRACK_STEP_PX
      && inGuide(refined) && agreement(mask, refined, this.neighboursOf(this.nearest(this.chosen)), this.check).ok;
    if (ok) for (let i = 0; i < 8; i += 1) this.chosen[i] = refined[i];
    return ok;
  }

  /** The app's card in pixel-index coordinates (continuous minus 0.5) into out (8). */
  pixelCorners(out) {
    for (let i = 0; i < 8; i += 1) out[i] = this.chosen[i] - 0.5;
    return out;
  }
}

/** "x,y x,y x,y x,y" with one decimal (TL, TR, BR, BL), or "" for no points. */
export function formatPoints(points) {
  if (!points) return '';
  const parts = [];
  for (let i = 0; i < 8; i += 2) parts.push(`${points[i].toFixed(1)},${points[i + 1].toFixed(1)}`);
  return parts.join(' ');
}
