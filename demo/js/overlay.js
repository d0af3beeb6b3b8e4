// What the app draws over the camera crop, in 480x640 model-input pixels: the translucent
// light-blue mask (one canvas, one ImageData) and the card's outline (a second canvas).

import { ImageUtils, MODEL_HEIGHT, MODEL_WIDTH } from './image-utils.js';

export const MASK_COLOR = [135, 206, 235]; // light blue (sky blue)
export const MASK_ALPHA = 110; // of 255: translucent, the card and its outline stay readable
const OUTLINE_COLOR = '#7CFC00'; // lawn green: visible on the blue mask and on most tables
const OUTLINE_WIDTH = 3; // px of the 480x640 canvas
const CORNER_RADIUS = 5;
// The other cards in view: thin and faint, so the one Capture takes stands out.
const OTHER_COLOR = 'rgba(255, 255, 255, 0.55)';
const OTHER_WIDTH = 1.5;

export class Overlay {
  constructor(maskCanvas, outlineCanvas) {
    for (const c of [maskCanvas, outlineCanvas]) {
      c.width = MODEL_WIDTH;
      c.height = MODEL_HEIGHT;
    }
    this.ctx = maskCanvas.getContext('2d');
    this.image = this.ctx.createImageData(MODEL_WIDTH, MODEL_HEIGHT);
    this.outline = outlineCanvas.getContext('2d');
  }

  /** prob: Float32Array(640*480) card probabilities; returns the number of card pixels. */
  drawMask(prob) {
    const n = ImageUtils.maskToRgba(prob, this.image.data, MASK_COLOR, MASK_ALPHA);
    this.ctx.putImageData(this.image, 0, 0);
    return n;
  }

  /**
   * points: the app's card, 8 values TL, TR, BR, BL in pixel-index coordinates, or null; others:
   * the other cards' corners (8 values each, the first `count`), drawn faint.
   */
  drawOutline(points, others = null, count = 0) {
    const g = this.outline;
    g.clearRect(0, 0, MODEL_WIDTH, MODEL_HEIGHT);
    // Pixel-index -> canvas coordinates (the canvas spans 0..480: the centre of pixel 0 is 0.5).
    g.lineJoin = 'round';
    g.lineWidth = OTHER_WIDTH;
    g.strokeStyle = OTHER_COLOR;
    for (let k = 0; k < count; k += 1) {
      g.beginPath();
      for (let i = 0; i < 8; i += 2) g.lineTo(others[8 * k + i] + 0.5, others[8 * k + i + 1] + 0.5);
      g.closePath();
      g.stroke();
    }
    if (!points) return;
    g.beginPath();
    for (let i = 0; i < 8; i += 2) g.lineTo(points[i] + 0.5, points[i + 1] + 0.5);
    g.closePath();
    g.lineWidth = OUTLINE_WIDTH;
    g.strokeStyle = OUTLINE_COLOR;
    g.stroke();
    g.fillStyle = OUTLINE_COLOR;
    for (let i = 0; i < 8; i += 2) {
      g.beginPath();
      g.arc(points[i] + 0.5, points[i + 1] + 0.5, CORNER_RADIUS, 0, 2 * Math.PI);
      g.fill();
    }
  }

  clear() {
    this.image.data.fill(0);
    this.ctx.clearRect(0, 0, MODEL_WIDTH, MODEL_HEIGHT);
    this.drawOutline(null);
  }
}
