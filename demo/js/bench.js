// Bare WASM inference timing for demo/benchmark.py: one model variant, one thread count per page
// load (onnxruntime-web fixes the thread count when its WASM module starts).

import * as ort from '/ort/ort.webgpu.min.mjs';
import { MODEL_HEIGHT, MODEL_WIDTH } from './image-utils.js';

const params = new URLSearchParams(self.location.search);
const model = params.get('model') || 'card_segmentation_fp32';
const threads = Number(params.get('threads') || 1);
const runs = Number(params.get('runs') || 20);
const warmup = Number(params.get('warmup') || 3);

async function main() {
  ort.env.wasm.wasmPaths = new URL('/ort/', self.location.href).href;
  ort.env.wasm.numThreads = threads;
  const session = await ort.InferenceSession.create(`/models/${model}.onnx`, { executionProviders: ['wasm'] });
  const input = new Float32Array(3 * MODEL_WIDTH * MODEL_HEIGHT);
  for (let i = 0; i < input.length; i += 1) input[i] = (i % 255) / 255;
  const feeds = { image: new ort.Tensor('float32', input, [1, 3, MODEL_HEIGHT, MODEL_WIDTH]) };
  const times = [];
  for (let i = 0; i < warmup + runs; i += 1) {
    const t0 = performance.now();
    await session.run(feeds);
    if (i >= warmup) times.push(performance.now() - t0);
  }
  times.sort((a, b) => a - b);
  const median = times[Math.floor(times.length / 2)];
  return {
    model, threads, runs, median_ms: median, fps: 1000 / median, min_ms: times[0],
    crossOriginIsolated: self.crossOriginIsolated, cores: navigator.hardwareConcurrency,
  };
}

main().then((r) => { self.benchResult = r; }, (err) => { self.benchResult = { error: String(err) }; })
  .finally(() => { document.querySelector('#out').textContent = JSON.stringify(self.benchResult, null, 1); });
