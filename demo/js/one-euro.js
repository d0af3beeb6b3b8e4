// The one-euro filter (Casiez, Roussel, Vogel, CHI 2012) over a fixed set of values, here the 8
// corner coordinates: strong smoothing while the card is still (no jitter), little while it moves
// (little lag). Per value: the cutoff frequency rises with the smoothed speed.

export class OneEuroFilter {
  /**
   * @param {number} size how many values are filtered together
   * @param {{minCutoff: number, beta: number, dCutoff: number}} params minCutoff and dCutoff in Hz,
   *   beta in 1 / (value unit): the cutoff is minCutoff + beta * |speed in units per second|.
   */
  constructor(size, { minCutoff, beta, dCutoff }) {
    this.minCutoff = minCutoff;
    this.beta = beta;
    this.dCutoff = dCutoff;
    this.value = new Float64Array(size); // filtered values
    this.speed = new Float64Array(size); // filtered derivative, units per second
    this.last = -1; // time of the last sample, seconds; -1: no sample yet
  }

  reset() {
    this.last = -1;
  }

  /** Feeds samples x (array of `size`) taken at time t (seconds); writes the filtered values into out. */
  filter(x, t, out = this.value) {
    const n = this.value.length;
    const dt = t - this.last;
    if (this.last < 0 || !(dt > 0)) {
      // First sample (or a repeated timestamp): nothing to smooth against.
      for (let i = 0; i < n; i += 1) { this.value[i] = x[i]; this.speed[i] = 0; }
      this.last = t;
      for (let i = 0; i < n; i += 1) out[i] = this.value[i];
      return out;
    }
    const aD = smoothing(this.dCutoff, dt);
    for (let i = 0; i < n; i += 1) {
      const rawSpeed = (x[i] - this.value[i]) / dt;
      this.speed[i] += aD * (rawSpeed - this.speed[i]);
      const a = smoothing(this.minCutoff + this.beta * Math.abs(this.speed[i]), dt);
      this.value[i] += a * (x[i] - this.value[i]);
      out[i] = this.value[i];
    }
    this.last = t;
    return out;
  }
}

/** The exponential smoothing factor of a first-order low-pass at `cutoff` Hz for a step of dt s. */
function smoothing(cutoff, dt) {
  const tau = 1 / (2 * Math.PI * cutoff);
  return 1 / (1 + tau / dt);
}
