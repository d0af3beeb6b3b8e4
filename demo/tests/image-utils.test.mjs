import assert from 'node:assert/strict';
import { test } from 'node:test';

import { firstOutputProblem, ImageUtils } from '../js/image-utils.js';

function check(width, height, expected) {
  const c = ImageUtils.centeredCrop34(width, height);
  assert.deepEqual(c, expected, `${width}x${height}`);
  for (const v of Object.values(c)) assert.ok(Number.isInteger(v), `${width}x${height}: integer pixels`);
  assert.ok(c.sx >= 0 && c.sy >= 0 && c.sx + c.sw <= width && c.sy + c.sh <= height, 'inside the frame');
  // centred: the margins differ by at most one pixel
  assert.ok(Math.abs(c.sx - (width - c.sx - c.sw)) <= 1 && Math.abs(c.sy - (height - c.sy - c.sh)) <= 1);
  return c;
}

test('landscape 1280x720 loses its sides', () => {
  check(1280, 720, { sx: 370, sy: 0, sw: 540, sh: 720 });
});

test('landscape 640x480 loses its sides', () => {
  check(640, 480, { sx: 140, sy: 0, sw: 360, sh: 480 });
});

test('portrait 720x1280 loses top and bottom', () => {
  check(720, 1280, { sx: 0, sy: 160, sw: 720, sh: 960 });
});

test('exact 3:4 is kept whole', () => {
  check(480, 640, { sx: 0, sy: 0, sw: 480, sh: 640 });
});

test('square', () => {
  check(500, 500, { sx: 62, sy: 0, sw: 375, sh: 500 });
});

test('odd sizes stay integer, largest and centred', () => {
  const c = check(641, 479, { sx: 141, sy: 0, sw: 359, sh: 479 });
  assert.ok(Math.abs(c.sw / c.sh - 0.75) < 0.01);
  check(333, 1001, { sx: 0, sy: 278, sw: 333, sh: 444 });
});

test('tiny frames', () => {
  check(1, 1, { sx: 0, sy: 0, sw: 1, sh: 1 });
  check(3, 4, { sx: 0, sy: 0, sw: 3, sh: 4 });
  check(2, 1, { sx: 0, sy: 0, sw: 1, sh: 1 });
});

test('largest: no 3:4 crop with a larger area fits', () => {
  for (const [w, h] of [[1920, 1080], [1080, 1920], [1000, 999], [77, 13]]) {
    const c = ImageUtils.centeredCrop34(w, h);
    const bigger = Math.min(w, (h * 3) / 4) * Math.min(h, (w * 4) / 3);
    assert.ok(c.sw * c.sh >= bigger * 0.98, `${w}x${h}`);
  }
});

test('invalid sizes throw', () => {
  assert.throws(() => ImageUtils.centeredCrop34(0, 480), RangeError);
  assert.throws(() => ImageUtils.centeredCrop34(640, NaN), RangeError);
});

test('rgbaToPlanar and maskToRgba', () => {
  const rgba = new Uint8ClampedArray([255, 0, 51, 255, 0, 102, 255, 255]);
  const out = new Float32Array(6);
  ImageUtils.rgbaToPlanar(rgba, out, 2);
  assert.deepEqual(Array.from(out, (v) => Math.round(v * 255)), [255, 0, 0, 102, 51, 255]);
  const overlay = new Uint8ClampedArray(8).fill(9);
  const n = ImageUtils.maskToRgba(new Float32Array([0.7, 0.2]), overlay, [135, 206, 235], 100);
  assert.equal(n, 1);
  assert.deepEqual(Array.from(overlay), [135, 206, 235, 100, 9, 9, 9, 0]);
});

test('isPlausibleOutput rejects zeros and NaN', () => {
  assert.equal(ImageUtils.isPlausibleOutput(new Float32Array(4)), false);
  assert.equal(ImageUtils.isPlausibleOutput(new Float32Array([0, NaN, 1, 0])), false);
  assert.equal(ImageUtils.isPlausibleOutput(new Float32Array([0, 1e-6, 0, 0])), true);
});

test('firstOutputProblem: NaN anywhere, or the first output all zeros; later zeros are fine', () => {
  const out = (a, b) => ({ output0: { data: new Float32Array(a) }, fallback: { data: new Float32Array(b) } });
  const names = ['output0', 'fallback'];
  assert.equal(firstOutputProblem(names, out([0, 0.3], [0, 0])), '');
  assert.match(firstOutputProblem(names, out([0, 0], [1, 0])), /'output0' is all zeros/);
  assert.match(firstOutputProblem(names, out([0, 0.3], [NaN, 0])), /'fallback' has a non-finite value/);
});
