import assert from 'node:assert/strict';
import { test } from 'node:test';

import {
  applyHomography, cropToFrame, homography, invert3x3, portraitOrder, SCAN_HEIGHT, SCAN_WIDTH, warpQuad,
} from '../js/geometry.js';
import { ImageUtils } from '../js/image-utils.js';

const close = (a, b, tol, msg) => assert.ok(Math.abs(a - b) <= tol, `${msg}: ${a} vs ${b}`);

// A perspective quadrilateral (TL, TR, BR, BL) and the unit-free rectangle it comes from.
const QUAD = [40.3, 30.7, 270.1, 55.2, 290.6, 370.4, 25.8, 340.9];
const RECT = [0, 0, 126, 0, 126, 176, 0, 176];

test('homography maps the four corners exactly', () => {
  const h = homography(RECT, QUAD);
  assert.equal(h[8], 1);
  for (let i = 0; i < 4; i += 1) {
    const [x, y] = applyHomography(h, RECT[2 * i], RECT[2 * i + 1]);
    close(x, QUAD[2 * i], 1e-9, `corner ${i} x`);
    close(y, QUAD[2 * i + 1], 1e-9, `corner ${i} y`);
  }
});

test('homography inverse round trip, and the opposite direction is the inverse', () => {
  const h = homography(RECT, QUAD);
  const inv = invert3x3(h);
  const back = homography(QUAD, RECT);
  for (const [x, y] of [[0, 0], [63, 88], [10.5, 170.25], [125, 3], [-20, 200]]) {
    const [u, v] = applyHomography(h, x, y);
    const [x1, y1] = applyHomography(inv, u, v);
    close(x1, x, 1e-9, 'inverse x'); close(y1, y, 1e-9, 'inverse y');
    const [x2, y2] = applyHomography(back, u, v);
    close(x2, x, 1e-8, 'dst->src x'); close(y2, y, 1e-8, 'dst->src y');
  }
});

test('homography of a pure scale and shift is that scale and shift', () => {
  const h = homography([0, 0, 10, 0, 10, 20, 0, 20], [5, 7, 25, 7, 25, 47, 5, 47]);
  const expected = [2, 0, 5, 0, 2, 7, 0, 0, 1];
  expected.forEach((v, i) => close(h[i], v, 1e-12, `h[${i}]`));
});

test('a degenerate quadrilateral has no homography', () => {
  assert.throws(() => homography(RECT, [0, 0, 10, 0, 20, 0, 30, 0]), RangeError);
});

// Hand-computed: frame = crop offset + (index + 0.5) * (crop size / model size) - 0.5, per axis.
test('crop corners back to a landscape 1280x720 frame', () => {
  const crop = ImageUtils.centeredCrop34(1280, 720); // {sx: 370, sy: 0, sw: 540, sh: 720}: 1.125 per axis
  const out = cropToFrame([0, 0, 479, 0, 479, 639, 239.5, 319.5], crop, 480, 640);
  // (0, 0): 370 + 0.5 * 1.125 - 0.5 = 370.0625, 0.5 * 1.125 - 0.5 = 0.0625
  // (479, 639): 370 + 479.5 * 1.125 - 0.5 = 908.9375, 639.5 * 1.125 - 0.5 = 718.9375
  // (239.5, 319.5), the input's centre: the frame's centre (639.5, 359.5)
  const expected = [370.0625, 0.0625, 908.9375, 0.0625, 908.9375, 718.9375, 639.5, 359.5];
  expected.forEach((v, i) => close(out[i], v, 1e-9, `value ${i}`));
});

test('crop corners back to a portrait 720x1280 frame', () => {
  const crop = ImageUtils.centeredCrop34(720, 1280); // {sx: 0, sy: 160, sw: 720, sh: 960}: 1.5 per axis
  const out = cropToFrame([0, 0, 479, 639, 239.5, 319.5, 100, 200], crop, 480, 640);
  // (0, 0): 0.5 * 1.5 - 0.5 = 0.25, 160 + 0.25 = 160.25
  // (479, 639): 479.5 * 1.5 - 0.5 = 718.75, 160 + 639.5 * 1.5 - 0.5 = 1118.75
  // (239.5, 319.5): the frame's centre (359.5, 639.5); (100, 200): 150.25, 160 + 300.25 = 460.25
  const expected = [0.25, 160.25, 718.75, 1118.75, 359.5, 639.5, 150.25, 460.25];
  expected.forEach((v, i) => close(out[i], v, 1e-9, `value ${i}`));
});

test('crop corners back to a 640x480 frame (downscaled crop) and per-axis scales', () => {
  const crop = ImageUtils.centeredCrop34(640, 480); // {sx: 140, sy: 0, sw: 360, sh: 480}: 0.75
  const out = cropToFrame([0, 0, 479, 639], crop, 480, 640);
  // 140 + 0.5 * 0.75 - 0.5 = 139.875; 0.375 - 0.5 = -0.125; 140 + 479.5 * 0.75 - 0.5 = 499.125; 639.5 * 0.75 - 0.5 = 479.125
  [139.875, -0.125, 499.125, 479.125].forEach((v, i) => close(out[i], v, 1e-9, `value ${i}`));
  // An odd frame: the crop is 359 x 479, so x scales by 359/480 and y by 479/640.
  const odd = ImageUtils.centeredCrop34(641, 479);
  const p = cropToFrame([479, 639], odd, 480, 640);
  close(p[0], 141 + 479.5 * (359 / 480) - 0.5, 1e-9, 'odd x');
  close(p[1], 639.5 * (479 / 640) - 0.5, 1e-9, 'odd y');
});

test('portraitOrder keeps an upright card and turns a card lying on its side', () => {
  const upright = [10, 10, 73, 10, 73, 98, 10, 98];
  assert.deepEqual(portraitOrder(upright), upright);
  const lying = [10, 10, 98, 10, 98, 73, 10, 73]; // TL-TR is the long side
  assert.deepEqual(portraitOrder(lying), [10, 73, 10, 10, 98, 10, 98, 73]); // from BL: a quarter turn
});

function image(width, height, fill) {
  const data = new Uint8ClampedArray(width * height * 4);
  for (let y = 0; y < height; y += 1) {
    for (let x = 0; x < width; x += 1) {
      const o = (y * width + x) * 4;
      const [r, g, b] = fill(x, y);
      data[o] = r; data[o + 1] = g; data[o + 2] = b; data[o + 3] = 255;
    }
  }
  return { data, width, height };
}

test('warping the whole image onto a same-size image is the identity (pixel-index convention)', () => {
  const src = image(37, 23, (x, y) => [x * 7, y * 11, (x * y) % 256]);
  const quad = [-0.5, -0.5, 36.5, -0.5, 36.5, 22.5, -0.5, 22.5]; // the image's outer edges
  const dst = warpQuad(src, quad, { data: new Uint8ClampedArray(37 * 23 * 4), width: 37, height: 23 });
  assert.deepEqual(dst.data, src.data);
});

// A checkerboard of 7 x 8 squares on a 126 x 176 card (18 x 22 px squares), seen in perspective.
const SQ_W = 18; const SQ_H = 22; const DARK = 20; const LIGHT = 230; const BACKGROUND = 128;
const checker = (u, v) => ((Math.floor(u / SQ_W) + Math.floor(v / SQ_H)) % 2 ? LIGHT : DARK);

test('warp of a synthetic checkerboard seen in perspective gives the flat checkerboard back', () => {
  // Render the source: each pixel averages 4 x 4 samples mapped into card coordinates.
  const toCard = homography(QUAD.map((v) => v + 0.5), RECT); // source continuous -> card continuous
  const src = image(320, 400, (x, y) => {
    let sum = 0;
    for (let sy = 0; sy < 4; sy += 1) {
      for (let sx = 0; sx < 4; sx += 1) {
        const [u, v] = applyHomography(toCard, x + (sx + 0.5) / 4, y + (sy + 0.5) / 4);
        sum += u >= 0 && u < 126 && v >= 0 && v < 176 ? checker(u, v) : BACKGROUND;
      }
    }
    const g = sum / 16;
    return [g, g, g];
  });
  const dst = warpQuad(src, QUAD, { data: new Uint8ClampedArray(126 * 176 * 4), width: 126, height: 176 });
  let good = 0;
  for (let y = 0; y < 176; y += 1) {
    for (let x = 0; x < 126; x += 1) {
      const got = dst.data[(y * 126 + x) * 4];
      const want = checker(x + 0.5, y + 0.5);
      // Away from the squares' edges (3 px) every pixel is exact to within rounding.
      const du = Math.min((x + 0.5) % SQ_W, SQ_W - ((x + 0.5) % SQ_W));
      const dv = Math.min((y + 0.5) % SQ_H, SQ_H - ((y + 0.5) % SQ_H));
      if (du > 3 && dv > 3) assert.ok(Math.abs(got - want) <= 2, `pixel (${x}, ${y}): ${got} vs ${want}`);
      if (Math.abs(got - want) < 30) good += 1;
      assert.equal(dst.data[(y * 126 + x) * 4 + 3], 255, 'opaque');
    }
  }
  assert.ok(good / (126 * 176) > 0.9, `${good} of ${126 * 176} pixels match`);
});

test('outside the source is black; the default scan is 63:88', () => {
  const src = image(10, 10, () => [200, 200, 200]);
  const dst = warpQuad(src, [-5, -5, 14, -5, 14, 14, -5, 14], { data: new Uint8ClampedArray(4 * 4 * 4), width: 4, height: 4 });
  assert.deepEqual(Array.from(dst.data.slice(0, 4)), [0, 0, 0, 255]); // top-left sample lies outside
  assert.equal(dst.data[(1 * 4 + 1) * 4], 200); // an inside sample
  assert.equal(SCAN_WIDTH * 88, SCAN_HEIGHT * 63);
});
