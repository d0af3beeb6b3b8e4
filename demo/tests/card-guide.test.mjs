import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

const svg = readFileSync(new URL('../assets/card-guide.svg', import.meta.url), 'utf8');
const attr = (tag, name) => Number(new RegExp(`<${tag}[^>]*\\s${name}="([^"]+)"`).exec(svg)[1]);

test('480 wide x 640 high', () => {
  assert.equal(attr('svg', 'width'), 480);
  assert.equal(attr('svg', 'height'), 640);
  assert.match(svg, /viewBox="0 0 480 640"/);
});

test('card outline is 5:7, centred, fitted inside a 20 % margin', () => {
  const x = attr('rect', 'x'); const y = attr('rect', 'y');
  const w = attr('rect', 'width'); const h = attr('rect', 'height');
  assert.ok(Math.abs(w / h - 5 / 7) < 1e-3, 'aspect 5:7');
  assert.ok(Math.abs(x + w / 2 - 240) < 0.02 && Math.abs(y + h / 2 - 320) < 0.02, 'centred');
  assert.ok(x >= 96 - 1e-6 && y >= 128 - 1e-6 && x + w <= 384 + 1e-6 && y + h <= 512 + 1e-6, 'inside the margin');
  assert.ok(Math.abs(h - 384) < 0.01 || Math.abs(w - 288) < 0.01, 'as large as the margin allows');
  assert.ok(Math.abs(w - 274.29) < 0.01 && Math.abs(x - 102.86) < 0.01 && y === 128);
  assert.ok(attr('rect', 'rx') > 0, 'rounded corners');
  assert.match(svg, /<rect[^>]*fill="none"/);
});

test('outside grey at opacity 0.2, inside transparent (even-odd hole)', () => {
  assert.match(svg, /<path[^>]*fill-opacity="0.2"/);
  assert.match(svg, /<path[^>]*fill-rule="evenodd"/);
  const d = /\sd="([^"]+)"/.exec(svg)[1];
  assert.match(d, /^M0 0H480V640H0Z M115\.92 128H364\.08/);
});
