// The segmentation model on onnxruntime-web: backend choice by measurement, one session,
// input and output buffers allocated once.

import * as ort from '/ort/ort.webgpu.min.mjs';
import { ImageUtils, MODEL_HEIGHT, MODEL_WIDTH } from './image-utils.js';

// The pruned model (half the MACs, -0.29 test IoU points): 8.8 vs 5.6 FPS on 2-core WASM, measured
// by demo/benchmark.py (README). The full model stays in exported_models/ for other uses.
export const MODEL_URLS = {
  fp16: '/models/card_segmentation_pruned30.onnx',
  fp32: '/models/card_segmentation_pruned30_fp32.onnx',
};
const PIXELS = MODEL_WIDTH * MODEL_HEIGHT;

/** WASM threads: all cores up to 4 measured fastest here (2 cores: 2 threads 136 ms vs 1 thread 227 ms). */
export function wasmThreads() {
  if (!self.crossOriginIsolated) return 1; // SharedArrayBuffer needs COOP + COEP
  return Math.max(1, Math.min(4, navigator.hardwareConcurrency || 1));
}

/**
 * A WebGPU adapter worth using: present, not a software fallback (SwiftShader runs a frame in
 * ~25 s), and whether it has shader-f16 (without it an FP16 model silently returns zeros).
 */
export async function probeWebGPU() {
  if (!navigator.gpu) return { usable: false, reason: 'no WebGPU in this browser' };
  let adapter = null;
  try {
    adapter = await navigator.gpu.requestAdapter({ powerPreference: 'high-performance' });
  } catch (err) {
    return { usable: false, reason: `requestAdapter failed: ${err}` };
  }
  if (!adapter) return { usable: false, reason: 'no WebGPU adapter' };
  const info = adapter.info || {};
  if (info.isFallbackAdapter || adapter.isFallbackAdapter) {
    return { usable: false, reason: 'software WebGPU adapter' };
  }
  return { usable: true, adapter, f16: adapter.features.has('shader-f16') };
}

/** A card-like test picture (light 5:7 rounded card on a dark table) to check a backend's first output. */
function fillProbe(input) {
  const cx0 = 140; const cx1 = 340; const cy0 = 180; const cy1 = 460;
  for (let y = 0; y < MODEL_HEIGHT; y += 1) {
    for (let x = 0; x < MODEL_WIDTH; x += 1) {
      const inside = x >= cx0 && x < cx1 && y >= cy0 && y < cy1;
      const border = inside && (x < cx0 + 10 || x >= cx1 - 10 || y < cy0 + 10 || y >= cy1 - 10);
      const v = inside ? (border ? 0.05 : 0.85) : 0.35;
      const i = y * MODEL_WIDTH + x;
      input[i] = v; input[PIXELS + i] = v * 0.95; input[2 * PIXELS + i] = v * 0.9;
    }
  }
}

async function fetchModel(url) {
  let response;
  try {
    response = await fetch(url);
  } catch (err) {
    throw Object.assign(new Error(`The model ${url} could not be downloaded (${err}).`), { kind: 'model' });
  }
  if (!response.ok) {
    throw Object.assign(new Error(`The model ${url} failed to load (HTTP ${response.status}).`), { kind: 'model' });
  }
  try {
    return new Uint8Array(await response.arrayBuffer());
  } catch (err) {
    throw Object.assign(new Error(`The model ${url} download broke off (${err}).`), { kind: 'model' });
  }
}

export class Segmenter {
  constructor(session, backend, precision, input, tensor) {
    this.session = session;
    this.backend = backend; // 'webgpu' | 'wasm'
    this.precision = precision; // 'fp16' | 'fp32'
    this.input = input; // Float32Array(3 * 640 * 480), planar RGB 0..1
    this.feeds = { image: tensor };
  }

  /** Try WebGPU (FP16 if shader-f16, else FP32), then WASM FP32; each checked on a probe frame. */
  static async create({ log = () => {} } = {}) {
    ort.env.wasm.wasmPaths = new URL('/ort/', self.location.href).href;
    ort.env.wasm.numThreads = wasmThreads();
    const input = new Float32Array(3 * PIXELS);
    const tensor = new ort.Tensor('float32', input, [1, 3, MODEL_HEIGHT, MODEL_WIDTH]);
    const attempts = [];
    const gpu = await probeWebGPU();
    if (gpu.usable) {
      ort.env.webgpu.adapter = gpu.adapter; // the adapter we checked is the one ORT uses
      if (gpu.f16) attempts.push({ backend: 'webgpu', precision: 'fp16' });
      attempts.push({ backend: 'webgpu', precision: 'fp32' });
    } else {
      log(`WebGPU skipped: ${gpu.reason}`);
    }
    attempts.push({ backend: 'wasm', precision: 'fp32' }); // FP16 is 2.4x slower on WASM
    const failures = [];
    const bytes = {};
    for (const { backend, precision } of attempts) {
      if (!bytes[precision]) bytes[precision] = await fetchModel(MODEL_URLS[precision]);
      let session = null;
      try {
        session = await ort.InferenceSession.create(bytes[precision], {
          executionProviders: [backend], // one provider per session: we know which one runs
          graphOptimizationLevel: 'all',
        });
        const seg = new Segmenter(session, backend, precision, input, tensor);
        fillProbe(input);
        const out = await seg.run();
        if (!ImageUtils.isPlausibleOutput(out)) throw new Error('first inference returned zeros or NaN');
        return seg;
      } catch (err) {
        failures.push(`${backend}/${precision}: ${err && err.message ? err.message : err}`);
        log(`backend ${backend} (${precision}) rejected: ${err}`);
        if (session) await session.release().catch(() => {});
      }
    }
    const error = new Error(`No inference backend works in this browser (${failures.join('; ')}).`);
    error.kind = 'backend';
    throw error;
  }

  /** Runs on the current contents of `this.input`; returns the (640*480) card probabilities. */
  async run() {
    // onnxruntime-web 1.22 hands back a new output tensor per run (a pre-allocated fetch came
    // back as zeros on WASM here), so that 1.2 MB buffer is the loop's one remaining allocation.
    const results = await this.session.run(this.feeds);
    return results.mask.data;
  }

  get label() {
    return this.backend === 'webgpu' ? 'WebGPU' : 'WASM';
  }
}
