// Any of the app's ONNX models on onnxruntime-web: backend choice, session creation, a checked
// first output, input and output names read from the session. No DOM: it runs in the page
// (bench.js) and in the inference worker (frame-worker.js) alike.

import * as ort from '/ort/ort.webgpu.min.mjs';
import { firstOutputProblem, MODEL_HEIGHT, MODEL_WIDTH } from './image-utils.js';

// The one list of model files, shared with demo.py (its start-up check reads the same file).
export const MODEL_LIST_URL = new URL('./models.json', import.meta.url).href;
export const MODEL_BASE_URL = '/models/';
const PIXELS = MODEL_WIDTH * MODEL_HEIGHT;

/** An error meant for the page; kind 'model' (download) or 'backend' (no backend runs it). */
export class ModelError extends Error {
  constructor(kind, message) {
    super(message);
    this.name = 'ModelError';
    this.kind = kind;
  }
}

/** {segmentation: {fp16: url, fp32: url}, corners: {...}, refiner: {...}} from demo/js/models.json. */
export async function loadModelList() {
  const response = await fetch(MODEL_LIST_URL);
  if (!response.ok) throw new ModelError('model', `The model list ${MODEL_LIST_URL} failed to load (HTTP ${response.status}).`);
  const list = await response.json();
  const urls = {};
  for (const [name, files] of Object.entries(list)) {
    urls[name] = { fp16: MODEL_BASE_URL + files.fp16, fp32: MODEL_BASE_URL + files.fp32 };
  }
  return urls;
}

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

/**
 * Configures onnxruntime-web once and returns the (backend, precision) pairs to try, best first:
 * WebGPU FP16 (only with shader-f16), WebGPU FP32, then WASM FP32 (FP16 is slower on WASM:
 * it computes in FP32 through casts; README, Browser speed).
 * `threads` overrides the WASM thread count (the benchmark); `wasmOnly` skips WebGPU.
 */
export async function chooseBackends({ threads = wasmThreads(), wasmOnly = false, log = () => {} } = {}) {
  ort.env.wasm.wasmPaths = new URL('/ort/', self.location.href).href;
  ort.env.wasm.numThreads = threads;
  const attempts = [];
  const gpu = wasmOnly ? { usable: false, reason: 'WASM requested' } : await probeWebGPU();
  if (gpu.usable) {
    ort.env.webgpu.adapter = gpu.adapter; // the adapter we checked is the one ORT uses
    if (gpu.f16) attempts.push({ backend: 'webgpu', precision: 'fp16' });
    attempts.push({ backend: 'webgpu', precision: 'fp32' });
  } else {
    log(`WebGPU skipped: ${gpu.reason}`);
  }
  attempts.push({ backend: 'wasm', precision: 'fp32' });
  return attempts;
}

async function fetchModel(url) {
  let response;
  try {
    response = await fetch(url);
  } catch (err) {
    throw new ModelError('model', `The model ${url} could not be downloaded (${err}).`);
  }
  if (!response.ok) throw new ModelError('model', `The model ${url} failed to load (HTTP ${response.status}).`);
  try {
    return new Uint8Array(await response.arrayBuffer());
  } catch (err) {
    throw new ModelError('model', `The model ${url} download broke off (${err}).`);
  }
}

/**
 * A card-like test picture (light 5:7 card with a dark border on a grey table), planar RGB 0..1,
 * to check a backend's first output.
 */
export function fillProbe(input) {
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

/** One input tensor, float32 [1, 3, 640, 480] planar RGB 0..1, that several models may share. */
export function createInput() {
  const data = new Float32Array(3 * PIXELS);
  return { data, tensor: new ort.Tensor('float32', data, [1, 3, MODEL_HEIGHT, MODEL_WIDTH]) };
}

// The probe picture's card (fillProbe), continuous px: the quad a refiner model is probed with.
const PROBE_QUAD = [140, 180, 340, 180, 340, 460, 140, 460];

export class Model {
  constructor(session, backend, precision, url, input) {
    this.session = session;
    this.backend = backend; // 'webgpu' | 'wasm'
    this.precision = precision; // 'fp16' | 'fp32'
    this.url = url;
    this.input = input; // from createInput(): fill input.data, then run()
    this.inputName = session.inputNames[0];
    this.outputNames = session.outputNames;
    this.feeds = { [this.inputName]: input.tensor };
    // The refiner (card_corners_refiner.onnx) also takes the quad to refine: one, [1, 4, 2], its
    // continuous px written into quad.data before run().
    this.quad = null;
    if (session.inputNames[1] === 'quads') {
      const data = new Float32Array(8);
      this.quad = { data, tensor: new ort.Tensor('float32', data, [1, 4, 2]) };
      this.feeds.quads = this.quad.tensor;
    }
  }

  /**
   * The first (backend, precision) of `attempts` whose session starts and whose first output on
   * the probe picture is plausible. files: {fp16: url, fp32: url}. The probe overwrites input.data.
   * `sessionOptions` adds to the app's options (the benchmark's profile turns on enableProfiling).
   */
  static async create(files, attempts, input, { log = () => {}, sessionOptions = {} } = {}) {
    const failures = [];
    const bytes = {};
    for (const { backend, precision } of attempts) {
      const url = files[precision];
      if (!bytes[url]) bytes[url] = await fetchModel(url);
      let session = null;
      try {
        session = await ort.InferenceSession.create(bytes[url], {
          executionProviders: [backend], // one provider per session: we know which one runs
          graphOptimizationLevel: 'all',
          ...sessionOptions,
        });
        const model = new Model(session, backend, precision, url, input);
        fillProbe(input.data);
        if (model.quad) model.quad.data.set(PROBE_QUAD);
        const out = await model.run();
        const reason = firstOutputProblem(model.outputNames, out);
        if (reason) throw new Error(`first inference: ${reason}`);
        return model;
      } catch (err) {
        failures.push(`${backend}/${precision}: ${err && err.message ? err.message : err}`);
        log(`${url}: backend ${backend} (${precision}) rejected: ${err}`);
        if (session) await session.release().catch(() => {});
      }
    }
    throw new ModelError('backend', `No inference backend runs ${files.fp32} in this browser (${failures.join('; ')}).`);
  }

  /**
   * Runs on the current contents of input.data; returns {outputName: ort.Tensor}. onnxruntime-web
   * 1.22 hands back new output tensors per run (a pre-allocated fetch came back as zeros on WASM
   * here), so the outputs are the loop's one allocation we cannot avoid.
   */
  run() {
    return this.session.run(this.feeds);
  }

  get label() {
    return this.backend === 'webgpu' ? 'WebGPU' : 'WASM';
  }
}

/**
 * Bare inference timing of the app's scheduled work: per round the segmentation model, then the
 * corner model every `cornersEvery` rounds (0: never) and, with a refiner, the refiner on the other
 * rounds (the app follows its card with it between corner model runs: corners.js), each timed around
 * run() alone; `warmup` rounds are not counted. Returns lists of ms: {segmentation, corners,
 * refiner, total} (total per round).
 */
export async function timeSchedule(segmentation, corners, { runs, warmup = 3, cornersEvery = 1, refiner = null }) {
  const seg = []; const cor = []; const ref = []; const total = [];
  if (refiner) refiner.quad.data.set([140, 180, 340, 180, 340, 460, 140, 460]); // the probe picture's card
  for (let i = 0; i < warmup + runs; i += 1) {
    const t0 = performance.now();
    await segmentation.run();
    const t1 = performance.now();
    const withCorners = corners && cornersEvery > 0 && i % cornersEvery === 0;
    if (withCorners) await corners.run();
    else if (refiner) await refiner.run();
    const t2 = performance.now();
    if (i < warmup) continue;
    seg.push(t1 - t0);
    if (withCorners) cor.push(t2 - t1);
    else if (refiner) ref.push(t2 - t1);
    total.push(t2 - t0);
  }
  return { segmentation: seg, corners: cor, refiner: ref, total };
}
