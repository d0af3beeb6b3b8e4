// The page's side of the inference worker (frame-worker.js): one promise per request.

const WORKER_URL = new URL('./frame-worker.js', import.meta.url);

export class Scanner {
  constructor(worker) {
    this.worker = worker;
    this.pending = new Map(); // id -> {resolve, reject}
    this.nextId = 1;
    this.ready = null;
    worker.onmessage = ({ data }) => this.onMessage(data);
    worker.onerror = (event) => {
      event.preventDefault();
      this.failAll(Object.assign(new Error(`The inference worker failed: ${event.message || 'script error'}`),
        { kind: 'backend' }));
    };
  }

  /**
   * Starts the worker and creates both models in it. Resolves to {segmentation: {backend,
   * precision, url}, corners: {...}}; rejects with an Error whose `kind` is 'model' (download)
   * or 'backend'. options: {threads, wasmOnly} (the benchmark).
   */
  static async create(options = {}) {
    const scanner = new Scanner(new Worker(WORKER_URL, { type: 'module' }));
    try {
      scanner.models = await scanner.request({ type: 'init', ...options });
    } catch (err) {
      scanner.worker.terminate(); // a retry starts a fresh worker
      throw err;
    }
    return scanner;
  }

  request(message, transfer = []) {
    const id = this.nextId;
    this.nextId += 1;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ ...message, id }, transfer);
    });
  }

  onMessage(data) {
    const waiting = this.pending.get(data.id);
    if (!waiting) return;
    this.pending.delete(data.id);
    if (data.type === 'error') waiting.reject(Object.assign(new Error(data.message), { kind: data.kind }));
    else if (data.type === 'ready') waiting.resolve(data.models);
    else waiting.resolve(data);
  }

  failAll(err) {
    for (const { reject } of this.pending.values()) reject(err);
    this.pending.clear();
  }

  /** One camera frame (the ImageBitmap is transferred: the worker closes it). */
  process(bitmap, crop) {
    return this.request({ type: 'frame', bitmap, crop }, [bitmap]);
  }

  /** The card of the newest frame with corners, flat: {blob, width, height, quad, frame}. */
  capture(mime, quality) {
    return this.request({ type: 'capture', mime, quality });
  }

  /** Bare timings of the scheduled work in the worker: {segmentation, corners, refiner, total} (ms lists). */
  bench(runs, warmup, cornersEvery, track = false) {
    return this.request({ type: 'bench', runs, warmup, cornersEvery, track });
  }

  forget() {
    this.worker.postMessage({ type: 'forget' });
  }
}
