// Pure helpers shared by the app, the worker and the tests: the crop, pixel loops, output checks (no DOM).

export const MODEL_WIDTH = 480;
export const MODEL_HEIGHT = 640;
export const MASK_THRESHOLD = 0.5;

export class ImageUtils {
  /**
   * The largest centred 3:4 portrait region of a width x height frame, in integer pixels.
   * A landscape frame loses its sides, a portrait frame its top and bottom.
   * @returns {{sx: number, sy: number, sw: number, sh: number}}
   */
  static centeredCrop34(width, height) {
    if (!(width > 0 && height > 0)) {
      throw new RangeError(`invalid frame size ${width}x${height}`);
    }
    let sw;
    let sh;
    if (width * 4 >= height * 3) {
      sh = height; // wider than 3:4: keep the full height
      sw = Math.max(1, Math.min(width, Math.round((height * 3) / 4)));
    } else {
      sw = width; // taller than 3:4: keep the full width
      sh = Math.max(1, Math.min(height, Math.round((width * 4) / 3)));
    }
    return { sx: Math.floor((width - sw) / 2), sy: Math.floor((height - sh) / 2), sw, sh };
  }

  /**
   * RGBA bytes (H*W*4, from getImageData) -> planar RGB float32 0..1 (3*H*W) written into `out`.
   */
  static rgbaToPlanar(rgba, out, pixels) {
    const g = pixels;
    const b = 2 * pixels;
    const scale = 1 / 255;
    for (let i = 0, j = 0; i < pixels; i += 1, j += 4) {
      out[i] = rgba[j] * scale;
      out[g + i] = rgba[j + 1] * scale;
      out[b + i] = rgba[j + 2] * scale;
    }
    return out;
  }

  /**
   * Card probabilities -> RGBA overlay bytes: `color` with `alpha` where p >= threshold, else
   * transparent. Returns the number of card pixels.
   */
  static maskToRgba(prob, out, color, alpha, threshold = MASK_THRESHOLD) {
    const [r, g, b] = color;
    let count = 0;
    for (let i = 0, j = 0; i < prob.length; i += 1, j += 4) {
      if (prob[i] >= threshold) {
        out[j] = r;
        out[j + 1] = g;
        out[j + 2] = b;
        out[j + 3] = alpha;
        count += 1;
      } else {
        out[j + 3] = 0;
      }
    }
    return count;
  }

  /** True when the output is usable: every value finite and not all exactly zero. */
  static isPlausibleOutput(prob) {
    let nonzero = false;
    for (let i = 0; i < prob.length; i += 1) {
      const v = prob[i];
      if (!Number.isFinite(v)) return false;
      if (v !== 0) nonzero = true;
    }
    return nonzero;
  }
}

/**
 * Why a first inference is unusable, or '': a non-finite value in any output, or the first output
 * (the model's main answer: the mask, the corner detector's candidates) all exactly zero, as FP16 on
 * WebGPU without shader-f16 gives. Later outputs may be all zero by design (the corner model's
 * `fallback` flags).
 */
export function firstOutputProblem(names, outputs) {
  for (const name of names) {
    const data = outputs[name].data;
    for (let i = 0; i < data.length; i += 1) {
      if (!Number.isFinite(data[i])) return `output '${name}' has a non-finite value`;
    }
  }
  return ImageUtils.isPlausibleOutput(outputs[names[0]].data) ? '' : `output '${names[0]}' is all zeros`;
}
