// The translucent light-blue mask over the camera crop: one 480x640 canvas, one ImageData.

import { ImageUtils, MODEL_HEIGHT, MODEL_WIDTH } from './image-utils.js';

export const MASK_COLOR = [135, 206, 235]; // light blue (sky blue)
export const MASK_ALPHA = 140; // of 255: translucent, the card stays readable

export class Overlay {
  constructor(canvas) {
    this.canvas = canvas;
    canvas.width = MODEL_WIDTH;
    canvas.height = MODEL_HEIGHT;
    this.ctx = canvas.getContext('2d');
    this.image = this.ctx.createImageData(MODEL_WIDTH, MODEL_HEIGHT);
  }

  /** prob: Float32Array(640*480) card probabilities; returns the number of card pixels. */
  draw(prob) {
    const n = ImageUtils.maskToRgba(prob, this.image.data, MASK_COLOR, MASK_ALPHA);
    this.ctx.putImageData(this.image, 0, 0);
    return n;
  }

  clear() {
    this.image.data.fill(0);
    this.ctx.clearRect(0, 0, MODEL_WIDTH, MODEL_HEIGHT);
  }
}
