// Auto-capture (off by default, a switch in the page): fire once when the card has been steady
// inside the guide for about half a second; fire again only after the card left or moved away.
// Pure logic on the smoothed corners (pixel-index, 480x640 model input); no DOM.

// The guide's card outline (demo/assets/card-guide.svg): x 102.86..377.15, y 128..512.
export const GUIDE = { x0: 102.86, y0: 128, x1: 377.15, y1: 512 };
export const GUIDE_MARGIN_PX = 24; // a corner may lie this far outside the guide's outline
export const MIN_GUIDE_COVER = 0.5; // the card covers at least half of the guide's area
export const STEADY_PX = 4; // no corner moves further than this from where the steady spell began
export const STEADY_S = 0.5;
export const REARM_PX = 40; // after a capture, a corner must move this far (or the card leave)

function quadArea(p) {
  let a = 0;
  for (let i = 0; i < 4; i += 1) {
    const j = (i + 1) % 4;
    a += p[2 * i] * p[2 * j + 1] - p[2 * j] * p[2 * i + 1];
  }
  return Math.abs(a) / 2;
}

function maxMove(a, b) {
  let m = 0;
  for (let i = 0; i < 8; i += 2) m = Math.max(m, Math.hypot(a[i] - b[i], a[i + 1] - b[i + 1]));
  return m;
}

/** True when every corner lies in the guide (plus margin) and the card covers enough of it. */
export function insideGuide(points) {
  for (let i = 0; i < 8; i += 2) {
    const x = points[i]; const y = points[i + 1];
    if (x < GUIDE.x0 - GUIDE_MARGIN_PX || x > GUIDE.x1 + GUIDE_MARGIN_PX
      || y < GUIDE.y0 - GUIDE_MARGIN_PX || y > GUIDE.y1 + GUIDE_MARGIN_PX) return false;
  }
  return quadArea(points) >= MIN_GUIDE_COVER * (GUIDE.x1 - GUIDE.x0) * (GUIDE.y1 - GUIDE.y0);
}

export class AutoCapture {
  constructor() {
    this.anchor = new Float64Array(8); // corners where the steady spell began
    this.since = -1; // its start, seconds; -1: no spell
    this.fired = null; // corners of the last capture, until re-armed
  }

  reset() {
    this.since = -1;
    this.fired = null;
  }

  /** Feeds the corners at time t (seconds), null when there is no card; true: capture now. */
  update(points, t) {
    if (!points) { this.reset(); return false; }
    if (this.fired) {
      if (maxMove(points, this.fired) < REARM_PX) return false;
      this.fired = null;
    }
    if (!insideGuide(points)) { this.since = -1; return false; }
    if (this.since < 0 || maxMove(points, this.anchor) > STEADY_PX) {
      this.anchor.set(points);
      this.since = t;
      return false;
    }
    if (t - this.since < STEADY_S) return false;
    this.fired = Float64Array.from(points);
    this.since = -1;
    return true;
  }
}
