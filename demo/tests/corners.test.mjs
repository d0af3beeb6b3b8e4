import assert from 'node:assert/strict';
import { test } from 'node:test';

import { CardTracker, formatPoints, inGuide, MAX_TRACK_STEP_PX, SCORE_THRESHOLD, TRACK_FRAMES } from '../js/corners.js';

const W = 480;
const H = 640;

/** A 640x480 card probability: 1 inside the axis-aligned boxes [x0, y0, x1, y1] (continuous px). */
function maskOf(...boxes) {
  const m = new Float32Array(W * H);
  for (const [x0, y0, x1, y1] of boxes) {
    for (let y = Math.ceil(y0); y < y1; y += 1) for (let x = Math.ceil(x0); x < x1; x += 1) m[y * W + x] = 1;
  }
  return m;
}

const quad = ([x0, y0, x1, y1]) => [x0, y0, x1, y0, x1, y1, x0, y1];
const CENTRE = [170, 220, 310, 416]; // a card in the guide (x 102.86..377.15, y 128..512)
const LEFT = [20, 220, 160, 416]; // a card beside it, 10 px apart, its centre left of the guide

/** card_corners.onnx's outputs for these cards: cards [12 * 8] best first, card_scores [12]. */
function outputs(boxes, scores) {
  const cards = new Float32Array(12 * 8);
  const s = new Float32Array(12);
  boxes.forEach((b, k) => { cards.set(quad(b), 8 * k); s[k] = scores[k]; });
  return [cards, s];
}

test('the threshold is the model card\'s 0.25', () => {
  assert.equal(SCORE_THRESHOLD, 0.25);
});

test('the guide takes a card whose centre lies in it', () => {
  assert.equal(inGuide(quad(CENTRE)), true);
  assert.equal(inGuide(quad(LEFT)), false);
});

test('the frame card in the guide is the app\'s, the mask-confirmed others are drawn faint', () => {
  const t = new CardTracker();
  const mask = maskOf(CENTRE, LEFT);
  const [cards, scores] = outputs([LEFT, CENTRE], [0.95, 0.9]);
  assert.equal(t.detected(mask, cards, scores, quad(CENTRE), 0.9), true);
  assert.deepEqual(Array.from(t.chosen), quad(CENTRE));
  assert.equal(t.nOthers, 1);
  assert.deepEqual(Array.from(t.others.subarray(0, 8)), quad(LEFT).map((v) => v - 0.5)); // pixel-index
  assert.deepEqual(Array.from(t.pixelCorners(new Float32Array(8))), quad(CENTRE).map((v) => v - 0.5));
  assert.equal(t.follows, true);
});

test('no card of the app\'s outside the guide, or where the mask does not agree, or below the threshold', () => {
  const t = new CardTracker();
  let [cards, scores] = outputs([LEFT], [0.9]);
  assert.equal(t.detected(maskOf(LEFT), cards, scores, quad(LEFT), 0.9), false);
  assert.equal(t.nOthers, 1, 'a card outside the guide is still drawn faint');
  // Two cards with a gap taken as one quad: background runs across it.
  const span = [20, 220, 310, 416];
  [cards, scores] = outputs([span], [0.9]);
  assert.equal(t.detected(maskOf(CENTRE, LEFT), cards, scores, quad(span), 0.9), false);
  assert.equal(t.nOthers, 0);
  [cards, scores] = outputs([CENTRE], [0.2]);
  assert.equal(t.detected(maskOf(CENTRE), cards, scores, quad(CENTRE), 0.2), false);
  assert.equal(t.follows, false);
});

test('the refiner follows the card for TRACK_FRAMES frames, not a jump beyond its reach', () => {
  const t = new CardTracker();
  const [cards, scores] = outputs([CENTRE], [0.9]);
  assert.equal(t.detected(maskOf(CENTRE), cards, scores, quad(CENTRE), 0.9), true);
  for (let f = 1; f <= TRACK_FRAMES; f += 1) {
    assert.equal(t.follows, true);
    const moved = [CENTRE[0] + 5 * f, CENTRE[1], CENTRE[2] + 5 * f, CENTRE[3]];
    assert.equal(t.followed(maskOf(moved), quad(moved), 1), true);
    assert.deepEqual(Array.from(t.chosen), quad(moved));
  }
  assert.equal(t.follows, false, 'then the corner model looks again');
  t.detected(maskOf(CENTRE), cards, scores, quad(CENTRE), 0.9);
  const far = [CENTRE[0] + MAX_TRACK_STEP_PX + 1, CENTRE[1], CENTRE[2] + MAX_TRACK_STEP_PX + 1, CENTRE[3]];
  assert.equal(t.followed(maskOf(far), quad(far), 1), false);
  assert.deepEqual(Array.from(t.chosen), quad(CENTRE), 'a lost card keeps its last corners');
  assert.equal(t.followed(maskOf(CENTRE), quad(CENTRE), 0), false, 'not a card\'s shape');
});

test('data-points text: TL, TR, BR, BL with one decimal, "" for none', () => {
  assert.equal(formatPoints([100, 120.04, 379.55, 129.5, 369.75, 500.25, 109.5, 489.5]),
    '100.0,120.0 379.6,129.5 369.8,500.3 109.5,489.5');
  assert.equal(formatPoints(null), '');
});
