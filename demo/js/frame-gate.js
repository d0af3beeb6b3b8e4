// Which camera frame the worker analyses next: one frame in flight, never the same frame twice,
// and, as soon as a result is back, the newest frame if the camera has shown one since the last
// start. By then it always has (a frame takes longer than a camera frame period), so the worker
// starts again at once instead of idling until the camera's next frame (up to 33 ms at 30 FPS).

export class FrameGate {
  constructor() {
    this.reset();
  }

  reset() {
    this.busy = false;
    this.started = -1; // media time of the frame the last inference started on
    this.shown = -1; // media time of the newest frame on the page
  }

  /** The page drew a camera frame; true when an inference is to start on it now. */
  frameShown(mediaTime) {
    this.shown = mediaTime;
    return this.take();
  }

  /** A result came back (or failed); true when an inference is to start on the newest frame now. */
  resultBack() {
    this.busy = false;
    return this.take();
  }

  take() {
    if (this.busy || this.shown === this.started) return false;
    this.started = this.shown;
    this.busy = true;
    return true;
  }
}
