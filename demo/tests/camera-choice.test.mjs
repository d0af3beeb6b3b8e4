import assert from 'node:assert/strict';
import { test } from 'node:test';

import { pickCamera } from '../js/camera.js';

const phone = [
  { deviceId: 'front', label: 'camera2 1, facing front', facing: 'user' },
  { deviceId: 'back', label: 'camera2 0, facing back', facing: 'environment' },
  { deviceId: 'wide', label: 'camera2 2, facing back', facing: 'environment' },
];

test('a phone: the first rear camera, not the first listed', () => {
  assert.equal(pickCamera(phone, ''), 'back');
});

test('the camera chosen last time wins while it is still listed', () => {
  assert.equal(pickCamera(phone, 'front'), 'front');
  assert.equal(pickCamera(phone, 'unplugged'), 'back');
});

test('a laptop without facing information: the first listed; none: empty', () => {
  assert.equal(pickCamera([{ deviceId: 'a', label: 'HD Webcam', facing: '' }, { deviceId: 'b', label: 'USB', facing: '' }], ''), 'a');
  assert.equal(pickCamera([], 'a'), '');
});
