import assert from 'node:assert/strict';
import { test } from 'node:test';

import { formatPoints, readCorners, SCORE_THRESHOLD } from '../js/corners.js';

test('the threshold is the model card\'s 0.25', () => {
  assert.equal(SCORE_THRESHOLD, 0.25);
});

test('continuous model output -> pixel-index corners (minus 0.5)', () => {
  const out = new Float32Array(8);
  const corners = new Float32Array([100.5, 120.5, 380, 130, 370.25, 500.75, 110, 490]);
  assert.equal(readCorners(corners, 0.9, out), true);
  assert.deepEqual(Array.from(out), [100, 120, 379.5, 129.5, 369.75, 500.25, 109.5, 489.5]);
});

test('no card below the threshold or with a non-finite corner; out untouched', () => {
  const out = new Float32Array(8).fill(7);
  assert.equal(readCorners(new Float32Array(8).fill(50), 0.249, out), false);
  assert.equal(readCorners(new Float32Array(8).fill(50), NaN, out), false);
  const bad = new Float32Array(8).fill(50); bad[5] = Infinity;
  assert.equal(readCorners(bad, 0.99, out), false);
  assert.deepEqual(Array.from(out), new Array(8).fill(7));
  assert.equal(readCorners(new Float32Array(8).fill(50), 0.25, out), true);
});

test('data-points text: TL, TR, BR, BL with one decimal, "" for none', () => {
  assert.equal(formatPoints([100, 120.04, 379.55, 129.5, 369.75, 500.25, 109.5, 489.5]),
    '100.0,120.0 379.6,129.5 369.8,500.3 109.5,489.5');
  assert.equal(formatPoints(null), '');
});
