import assert from 'node:assert/strict';
import { test } from 'node:test';

import { OneEuroFilter } from '../js/one-euro.js';

const PARAMS = { minCutoff: 1.0, beta: 0.05, dCutoff: 1.0 }; // the app's (demo/js/app.js)

// A deterministic pseudo-random generator (mulberry32) and normal noise from it.
function rng(seed) {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
function normal(rand) {
  return Math.sqrt(-2 * Math.log(1 - rand())) * Math.cos(2 * Math.PI * rand());
}
const std = (xs) => {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  return Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / xs.length);
};

test('the first sample passes through; reset starts over', () => {
  const f = new OneEuroFilter(2, PARAMS);
  assert.deepEqual(Array.from(f.filter([3, 4], 1.0)), [3, 4]);
  f.filter([13, 14], 1.1);
  f.reset();
  assert.deepEqual(Array.from(f.filter([7, 8], 5.0)), [7, 8]);
});

for (const hz of [3, 30]) {
  test(`a still card at ${hz} Hz: jitter smoothed`, () => {
    const rand = rng(hz);
    const f = new OneEuroFilter(1, PARAMS);
    const raw = []; const out = [];
    for (let i = 0; i < 300; i += 1) {
      const x = 200 + 0.5 * normal(rand);
      raw.push(x);
      out.push(f.filter([x], i / hz)[0]);
    }
    const ratio = std(out.slice(20)) / std(raw.slice(20));
    assert.ok(ratio < (hz === 30 ? 0.45 : 0.85), `jitter kept ${ratio.toFixed(2)} of raw`);
  });

  test(`a card moving at 150 px/s at ${hz} Hz: followed with little lag`, () => {
    const f = new OneEuroFilter(1, PARAMS);
    let lag = 0;
    for (let i = 0; i <= 2 * hz; i += 1) {
      const t = i / hz;
      lag = 150 * t - f.filter([150 * t], t)[0];
    }
    // A plain 1 Hz low-pass would trail by about 150 / (2 pi) = 24 px once settled.
    assert.ok(lag >= 0 && lag < 10, `lag ${lag.toFixed(1)} px after 2 s`);
  });
}
