import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

import { AutoCapture, GUIDE, insideGuide, STEADY_S } from '../js/auto-capture.js';

// The guide card as drawn in the SVG, shrunk by 6 px: inside, covering most of it.
const IN = [GUIDE.x0 + 6, GUIDE.y0 + 6, GUIDE.x1 - 6, GUIDE.y0 + 6, GUIDE.x1 - 6, GUIDE.y1 - 6, GUIDE.x0 + 6, GUIDE.y1 - 6];
const shift = (p, dx, dy = 0) => p.map((v, i) => v + (i % 2 ? dy : dx));

test('GUIDE is the outline of demo/assets/card-guide.svg', () => {
  const svg = readFileSync(new URL('../assets/card-guide.svg', import.meta.url), 'utf8');
  const attr = (name) => Number(new RegExp(`<rect[^>]*\\s${name}="([^"]+)"`).exec(svg)[1]);
  assert.ok(Math.abs(attr('x') - GUIDE.x0) < 0.01 && Math.abs(attr('y') - GUIDE.y0) < 0.01);
  assert.ok(Math.abs(attr('x') + attr('width') - GUIDE.x1) < 0.01 && Math.abs(attr('y') + attr('height') - GUIDE.y1) < 0.01);
});

test('inside the guide: corners near the outline and the card large enough', () => {
  assert.equal(insideGuide(IN), true);
  assert.equal(insideGuide(shift(IN, 60)), false, 'half out to the right');
  const small = [200, 280, 280, 280, 280, 380, 200, 380];
  assert.equal(insideGuide(small), false, 'too small');
});

test('fires once after the card was steady inside the guide for STEADY_S, then re-arms after it left', () => {
  const a = new AutoCapture();
  const fired = [];
  for (let i = 0; i <= 10; i += 1) {
    const t = i * 0.1;
    const jitter = (i % 2) * 1.5; // px, below STEADY_PX
    if (a.update(shift(IN, jitter), t)) fired.push(t);
  }
  assert.deepEqual(fired, [STEADY_S]);
  assert.equal(a.update(IN, 1.2), false, 'not again while the same card stays');
  assert.equal(a.update(null, 1.3), false);
  let again = false;
  for (let t = 1.4; t < 2.5; t += 0.1) again = again || a.update(IN, t);
  assert.equal(again, true, 'a card put back in place is captured again');
});

test('never while the card moves or lies outside the guide', () => {
  const a = new AutoCapture();
  for (let i = 0; i < 30; i += 1) {
    assert.equal(a.update(shift(IN, (i % 2) * 10), i * 0.1), false, 'moving');
    assert.equal(new AutoCapture().update(shift(IN, 80), i * 0.1), false, 'outside');
  }
  const b = new AutoCapture();
  for (let i = 0; i < 30; i += 1) assert.equal(b.update(shift(IN, 80), i * 0.1), false, 'outside');
});
