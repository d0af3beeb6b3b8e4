import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';

// demo/js/models.json: the one list of model files, read by demo.py and inference.js.
const list = JSON.parse(readFileSync(new URL('../js/models.json', import.meta.url), 'utf8'));

test('the app runs card_segmentation.onnx and card_corners.onnx, each with an FP32 twin, and the refiner', () => {
  assert.deepEqual(Object.keys(list).sort(), ['corners', 'refiner', 'segmentation']);
  assert.deepEqual(list.segmentation, { fp16: 'card_segmentation.onnx', fp32: 'card_segmentation_fp32.onnx' });
  assert.deepEqual(list.corners, { fp16: 'card_corners.onnx', fp32: 'card_corners_fp32.onnx' });
  // The refine stage is FP32 in both corner files: its graph has one file for both.
  assert.deepEqual(list.refiner, { fp16: 'card_corners_refiner.onnx', fp32: 'card_corners_refiner.onnx' });
});
