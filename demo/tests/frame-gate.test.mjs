import assert from 'node:assert/strict';
import { test } from 'node:test';

import { FrameGate } from '../js/frame-gate.js';

test('one frame in flight: frames shown meanwhile start nothing', () => {
  const gate = new FrameGate();
  assert.equal(gate.frameShown(0.0), true);
  assert.equal(gate.frameShown(0.033), false);
  assert.equal(gate.frameShown(0.067), false);
});

test('a result back with a newer frame shown starts the next inference at once, on that frame', () => {
  const gate = new FrameGate();
  gate.frameShown(0.0);
  gate.frameShown(0.1);
  assert.equal(gate.resultBack(), true, 'no wait for the camera');
  assert.equal(gate.started, 0.1);
  assert.equal(gate.busy, true);
});

test('never the same frame twice: a result back with no newer frame waits for the camera', () => {
  const gate = new FrameGate();
  gate.frameShown(0.5);
  assert.equal(gate.resultBack(), false);
  assert.equal(gate.busy, false);
  assert.equal(gate.frameShown(0.5), false, 'the same frame drawn again');
  assert.equal(gate.frameShown(0.533), true);
});

test('reset forgets the frames (a restarted camera starts its media time again)', () => {
  const gate = new FrameGate();
  gate.frameShown(0.0);
  gate.reset();
  assert.equal(gate.busy, false);
  assert.equal(gate.frameShown(0.0), true);
});
