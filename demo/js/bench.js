// Bare inference timing for demo/benchmark.py, WASM, one thread count per page load
// (onnxruntime-web fixes the thread count when its WASM module starts). Two modes:
//   ?models=a,b,c&threads=2&runs=20     model files of /models/, timed in interleaved rounds (the
//                                        order rotates every round), each with its own input name
//   ?profile=a&threads=2&runs=10         onnxruntime's per-operator profile of one model file: the
//                                        session runs with enableProfiling and writes its trace
//                                        events to the console (benchmark.py collects and sums them)
//   ?schedule=worker&cornersEvery=4&track=1&threads=2&runs=20
//                                        the app's scheduled work in its worker (frame-worker.js:
//                                        segmentation, then the corner model every N rounds and, with
//                                        track=1, the refiner on the rounds between)
// Both also count the page's animation frames meanwhile: how smooth the page stays. Results in
// window.benchResult.

import { chooseBackends, createInput, Model } from './inference.js';
import { Scanner } from './scanner.js';

const params = new URLSearchParams(self.location.search);
const threads = Number(params.get('threads') || 1);
const runs = Number(params.get('runs') || 20);
const warmup = Number(params.get('warmup') || 3);

function stats(times) {
  const sorted = [...times].sort((a, b) => a - b);
  const median = sorted.length % 2 ? sorted[(sorted.length - 1) / 2]
    : (sorted[sorted.length / 2 - 1] + sorted[sorted.length / 2]) / 2;
  const mean = sorted.reduce((a, b) => a + b, 0) / sorted.length;
  return { median_ms: median, mean_ms: mean, min_ms: sorted[0], fps: 1000 / median, runs: sorted.length };
}

/** Counts animation frames until stopped: {fps, max_gap_ms} (the longest the page could not paint). */
function watchFrames() {
  let count = 0; let last = performance.now(); let maxGap = 0; let on = true;
  const start = last;
  const tick = (now) => {
    if (!on) return;
    count += 1;
    maxGap = Math.max(maxGap, now - last);
    last = now;
    requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  return () => {
    on = false;
    return { page_fps: (count * 1000) / (performance.now() - start), max_frame_gap_ms: maxGap };
  };
}

async function benchModels(names) {
  const attempts = await chooseBackends({ threads, wasmOnly: true });
  const input = createInput(); // the probe picture from Model.create stays in it: a card frame
  const models = [];
  for (const name of names) models.push(await Model.create({ fp32: `/models/${name}.onnx` }, attempts, input));
  const times = names.map(() => []);
  const stop = watchFrames();
  for (let round = 0; round < warmup + runs; round += 1) {
    for (let k = 0; k < models.length; k += 1) {
      const m = (round + k) % models.length; // first model rotates: no model always runs first
      const t0 = performance.now();
      await models[m].run();
      if (round >= warmup) times[m].push(performance.now() - t0);
    }
  }
  const page = stop();
  return {
    mode: 'models',
    rows: names.map((name, m) => ({ model: name, input: models[m].inputName, ...stats(times[m]) })),
    ...page,
  };
}

async function profileModel(name) {
  const attempts = await chooseBackends({ threads, wasmOnly: true });
  const input = createInput();
  // The probe run inside create() is the session's first model_run; warm-up runs follow.
  const model = await Model.create({ fp32: `/models/${name}.onnx` }, attempts, input,
    { sessionOptions: { enableProfiling: true } });
  const times = [];
  for (let round = 0; round < warmup + runs; round += 1) {
    const t0 = performance.now();
    await model.run();
    if (round >= warmup) times.push(performance.now() - t0);
  }
  await model.session.endProfiling(); // onnxruntime-web prints the trace events with console.log
  return { mode: 'profile', model: name, input: model.inputName, skipRuns: 1 + warmup, ...stats(times) };
}

async function benchSchedule(cornersEvery, track) {
  const scanner = await Scanner.create({ threads, wasmOnly: true });
  const stop = watchFrames();
  const times = await scanner.bench(runs, warmup, cornersEvery, track);
  scanner.worker.terminate();
  const page = stop();
  return {
    mode: 'schedule', where: 'worker', cornersEvery, track,
    total: stats(times.total), segmentation: stats(times.segmentation),
    corners: times.corners.length ? stats(times.corners) : null,
    refiner: times.refiner.length ? stats(times.refiner) : null,
    ...page,
  };
}

async function main() {
  const schedule = params.get('schedule');
  let result;
  if (schedule) result = await benchSchedule(Number(params.get('cornersEvery') ?? 1), params.get('track') === '1');
  else if (params.get('profile')) result = await profileModel(params.get('profile'));
  else result = await benchModels((params.get('models') || 'card_segmentation_fp32').split(','));
  return { ...result, threads, crossOriginIsolated: self.crossOriginIsolated, cores: navigator.hardwareConcurrency };
}

main().then((r) => { self.benchResult = r; }, (err) => { self.benchResult = { error: String(err && err.message ? err.message : err) }; })
  .finally(() => { document.querySelector('#out').textContent = JSON.stringify(self.benchResult, null, 1); });
