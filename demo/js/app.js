// Wires the page: camera list, start, the frame loop (inference in a worker), the live corners,
// capture and the scans, footer and errors.

import { AutoCapture } from './auto-capture.js';
import { CameraError, listCameras, openCamera, pickCamera, stopStream } from './camera.js';
import { formatPoints } from './corners.js';
import { FrameGate } from './frame-gate.js';
import { ImageUtils } from './image-utils.js';
import { OneEuroFilter } from './one-euro.js';
import { Overlay } from './overlay.js';
import { Scanner } from './scanner.js';

const FPS_WINDOW_MS = 1000;
// Corners older than this, or than 3 frame times when frames take longer, are stale: no card.
const STALE_MIN_MS = 1000;
// A card's corners that jump further than this between two frames are another card (or the card
// lost and found again): the filter starts afresh instead of gliding across (px of the 480x640 input).
const NEW_CARD_JUMP_PX = 40;
// One-euro filter on the corners in px of the 480x640 input (README, Live corners): at rest the
// cutoff is 1 Hz (jitter smoothed), moving at 100 px/s it is 1 + 0.05 * 100 = 6 Hz (little lag).
const SMOOTHING = { minCutoff: 1.0, beta: 0.05, dCutoff: 1.0 };
const SCAN_TYPE = 'image/jpeg';
const SCAN_QUALITY = 0.92;
const MAX_OLDER_SCANS = 12; // older scans kept in the strip (their object URLs are revoked after)
const CAMERA_KEY = 'cardscan.camera'; // localStorage: the deviceId chosen last

const el = {
  select: document.querySelector('[data-testid="camera-select"]'),
  start: document.querySelector('[data-testid="start"]'),
  error: document.querySelector('[data-testid="error"]'),
  backend: document.querySelector('[data-testid="backend"]'),
  fps: document.querySelector('[data-testid="fps"]'),
  resolution: document.querySelector('[data-testid="resolution"]'),
  corners: document.querySelector('[data-testid="corners"]'),
  capture: document.querySelector('[data-testid="capture"]'),
  auto: document.querySelector('[data-testid="auto-capture"]'),
  scan: document.querySelector('[data-testid="scan"]'),
  placeholder: document.querySelector('[data-testid="scan-placeholder"]'),
  download: document.querySelector('[data-testid="download"]'),
  strip: document.querySelector('.strip'),
  status: document.querySelector('#status'),
  video: document.querySelector('#video'),
  view: document.querySelector('#view'),
};

// Allocated once: the view context, the overlay canvases, the corner filter and its output.
const viewCtx = el.view.getContext('2d');
let others = new Float32Array(0); // the faint cards of the last corner model run, pixel-index
const overlay = new Overlay(document.querySelector('[data-testid="overlay"]'),
  document.querySelector('[data-testid="outline"]'));
const filter = new OneEuroFilter(8, SMOOTHING);
const gate = new FrameGate();
const smoothed = new Float64Array(8);
const autoCapture = new AutoCapture();

const state = {
  scanner: null,
  scannerPromise: null,
  stream: null,
  crop: null,
  running: false,
  ready: false, // a start finished: camera open and models created
  starting: false,
  restartRequested: false,
  capturing: false,
  frameHandle: 0,
  hasCorners: false,
  cornersAt: 0, // performance.now() of the frame the shown corners come from
  frameMs: 0, // the last frame's round trip
  fpsCount: 0,
  fpsStart: 0,
  frames: 0,
  inferenceSum: 0, // ms of session.run in the current FPS window
  frameSum: 0, // ms of whole frames in the current FPS window
  // ms of the frame's other stages in the current FPS window (the benchmark reports them apart):
  // grab = createImageBitmap of the video frame; prep = the worker's crop, scale and RGBA -> planar
  // input copy; post = the worker's loops over the output (card fraction, corners); draw = the
  // mask overlay and outline on the page. The rest of a round trip is messaging and waiting.
  stageSums: { grab: 0, prep: 0, post: 0, draw: 0 },
  grabMs: 0, // the current frame's
  drawMs: 0,
  generation: 0, // bumps on every stop so stale callbacks do nothing
};

function showError(message) {
  el.error.textContent = message; // textContent: never HTML from an error
  el.error.hidden = !message;
}

function setStatus(text) {
  el.status.textContent = text;
}

function modelError(err) {
  return err && err.kind === 'model' ? `${err.message} Check that the server can see train/exported_models/.` : err.message;
}

function getScanner() {
  if (!state.scannerPromise) {
    state.scannerPromise = Scanner.create().then((scanner) => {
      state.scanner = scanner;
      const { segmentation, corners } = scanner.models;
      el.backend.textContent = segmentation.backend === 'webgpu' ? 'WebGPU' : 'WASM';
      el.backend.title = `segmentation: ${segmentation.url} on ${segmentation.backend}; `
        + `corners: ${corners.url} on ${corners.backend}`;
      return scanner;
    }, (err) => {
      state.scannerPromise = null; // the next Start tries again (a download may have broken off)
      throw err;
    });
  }
  return state.scannerPromise;
}

const onAnimationFrame = (now) => onFrame(now, null);

function scheduleFrame() {
  const v = el.video;
  state.frameHandle = v.requestVideoFrameCallback
    ? v.requestVideoFrameCallback(onFrame)
    : requestAnimationFrame(onAnimationFrame);
}

function cancelFrame() {
  const v = el.video;
  if (!state.frameHandle) return;
  if (v.cancelVideoFrameCallback) v.cancelVideoFrameCallback(state.frameHandle);
  else cancelAnimationFrame(state.frameHandle);
  state.frameHandle = 0;
}

function onFrame(now, metadata) {
  if (!state.running) return;
  const { sx, sy, sw, sh } = state.crop;
  viewCtx.drawImage(el.video, sx, sy, sw, sh, 0, 0, sw, sh);
  if (gate.frameShown(metadata ? metadata.mediaTime : el.video.currentTime)) infer(state.generation);
  if (state.hasCorners && performance.now() - state.cornersAt > Math.max(STALE_MIN_MS, 3 * state.frameMs)) {
    showCorners(null); // the worker fell behind: do not offer a capture of old corners
  }
  scheduleFrame();
}

async function infer(generation) {
  const t0 = performance.now();
  try {
    // The full camera frame goes to the worker, which crops it for the models and keeps it while
    // its corners are the newest, for a capture at full resolution.
    const bitmap = await createImageBitmap(el.video);
    state.grabMs = performance.now() - t0;
    if (generation !== state.generation) { bitmap.close(); return; }
    const r = await state.scanner.process(bitmap, state.crop);
    if (generation !== state.generation) return; // stopped meanwhile: drop the result
    const tDraw = performance.now();
    overlay.drawMask(r.mask);
    if (r.others) others = r.others; // null: a refiner frame keeps the last corner model run's
    if (r.found) {
      if (state.hasCorners && jump(r.corners, smoothed) > NEW_CARD_JUMP_PX) filter.reset();
      filter.filter(r.corners, t0 / 1000, smoothed);
      state.cornersAt = t0;
      showCorners(smoothed);
    } else {
      showCorners(null); // no card, none in the guide, or the mask does not confirm it
    }
    const t1 = performance.now();
    state.drawMs = t1 - tDraw;
    state.frameMs = t1 - t0;
    countFrame(r.ms);
  } catch (err) {
    if (generation !== state.generation) return; // a stopped session's error is not news
    showError(`Inference failed: ${err && err.message ? err.message : err}`);
    stop();
  } finally {
    // The next frame at once when the camera has shown a newer one (frame-gate.js).
    if (generation === state.generation && gate.resultBack() && state.running) infer(generation);
  }
}

function jump(a, b) {
  let m = 0;
  for (let i = 0; i < 8; i += 2) m = Math.max(m, Math.hypot(a[i] - b[i], a[i + 1] - b[i + 1]));
  return m;
}

/**
 * Shows the app's card's smoothed corners (or none) and the other cards found: outlines,
 * data-points and data-cards, the capture button, auto-capture.
 */
function showCorners(points) {
  state.hasCorners = Boolean(points);
  if (!points) filter.reset();
  const nOthers = others.length / 8;
  overlay.drawOutline(points, others, nOthers);
  el.corners.dataset.points = formatPoints(points);
  el.corners.dataset.cards = String(nOthers + (points ? 1 : 0));
  el.corners.textContent = points ? 'Card found' : nOthers ? 'Hold a card in the guide' : 'No card';
  el.capture.disabled = !points || state.capturing;
  if (el.auto.checked && autoCapture.update(points, performance.now() / 1000)) capture();
  else if (!el.auto.checked) autoCapture.reset();
}

function timestamp(date) {
  const p = (n) => String(n).padStart(2, '0');
  return `${date.getFullYear()}${p(date.getMonth() + 1)}${p(date.getDate())}-`
    + `${p(date.getHours())}${p(date.getMinutes())}${p(date.getSeconds())}`;
}

async function capture() {
  if (state.capturing || !state.scanner || !state.hasCorners) return;
  state.capturing = true;
  el.capture.disabled = true;
  try {
    const scan = await state.scanner.capture(SCAN_TYPE, SCAN_QUALITY);
    showScan(scan.blob);
  } catch (err) {
    showError(`Capture failed: ${err && err.message ? err.message : err}`);
  } finally {
    state.capturing = false;
    el.capture.disabled = !state.hasCorners;
  }
}

/** The newest scan in the one img/link with test ids; the one before it moves to the strip. */
function showScan(blob) {
  const previous = el.scan.getAttribute('src');
  if (previous) {
    const link = document.createElement('a');
    link.href = previous;
    link.download = el.download.download;
    const img = document.createElement('img');
    img.src = previous;
    img.alt = `Scan ${el.download.download}`;
    link.append(img);
    el.strip.prepend(link);
    while (el.strip.children.length > MAX_OLDER_SCANS) {
      const old = el.strip.lastElementChild;
      URL.revokeObjectURL(old.href);
      old.remove();
    }
  }
  const url = URL.createObjectURL(blob);
  const name = `card-${timestamp(new Date())}.${blob.type === 'image/png' ? 'png' : 'jpg'}`;
  el.scan.src = url;
  el.scan.hidden = false;
  el.placeholder.hidden = true;
  el.download.hidden = false;
  el.download.href = url;
  el.download.download = name;
  el.download.textContent = `Download ${name}`;
}

/**
 * Frames per second over FPS_WINDOW_MS. data-inference-ms / data-frame-ms on the FPS element: the
 * window's mean model time per frame (session.run of both models) and whole round trip per frame,
 * for the benchmark and the tooltip; data-grab-ms, -prep-ms, -post-ms, -draw-ms: the other stages'
 * means (state.stageSums).
 */
function countFrame(ms) {
  const now = performance.now();
  state.fpsCount += 1;
  state.frames += 1;
  el.fps.dataset.frames = state.frames; // frames analysed since the page opened (tests wait on it)
  state.inferenceSum += ms.segmentation + ms.corners;
  state.frameSum += state.frameMs;
  const sums = state.stageSums;
  sums.grab += state.grabMs;
  sums.prep += ms.prep;
  sums.post += ms.post;
  sums.draw += state.drawMs;
  const elapsed = now - state.fpsStart;
  if (elapsed >= FPS_WINDOW_MS) {
    const n = state.fpsCount;
    el.fps.textContent = ((n * 1000) / elapsed).toFixed(1);
    el.fps.dataset.inferenceMs = (state.inferenceSum / n).toFixed(1);
    el.fps.dataset.frameMs = (state.frameSum / n).toFixed(1);
    el.fps.dataset.grabMs = (sums.grab / n).toFixed(2);
    el.fps.dataset.prepMs = (sums.prep / n).toFixed(2);
    el.fps.dataset.postMs = (sums.post / n).toFixed(2);
    el.fps.dataset.drawMs = (sums.draw / n).toFixed(2);
    el.fps.title = `per frame, mean of the last ${n}: models ${el.fps.dataset.inferenceMs} ms, `
      + `whole round trip ${el.fps.dataset.frameMs} ms`;
    state.fpsCount = 0;
    state.inferenceSum = 0;
    state.frameSum = 0;
    resetStageSums();
    state.fpsStart = now;
  }
}

function resetStageSums() {
  const sums = state.stageSums;
  sums.grab = 0; sums.prep = 0; sums.post = 0; sums.draw = 0;
}

function startLoop() {
  if (state.running || !state.ready) return;
  state.running = true;
  gate.reset();
  state.fpsCount = 0;
  state.inferenceSum = 0;
  state.frameSum = 0;
  resetStageSums();
  state.fpsStart = performance.now();
  scheduleFrame();
}

function stopLoop() {
  state.running = false;
  state.generation += 1;
  cancelFrame();
  others = others.subarray(0, 0);
  showCorners(null);
  if (state.scanner) state.scanner.forget();
}

function stop() {
  stopLoop();
  state.ready = false;
  stopStream(state.stream);
  state.stream = null;
  el.video.srcObject = null;
  overlay.clear();
  el.fps.textContent = '–';
  el.resolution.textContent = '–';
  el.start.textContent = 'Start';
}

function applyCrop() {
  state.crop = ImageUtils.centeredCrop34(el.video.videoWidth, el.video.videoHeight);
  el.view.width = state.crop.sw;
  el.view.height = state.crop.sh;
  el.resolution.textContent = `${el.video.videoWidth}x${el.video.videoHeight}`;
}

// Starts never overlap: a request during a start (a camera change, a second click) runs after it.
async function start() {
  if (state.starting) {
    state.restartRequested = true;
    return;
  }
  state.starting = true;
  showError('');
  stop();
  el.start.disabled = true;
  try {
    setStatus('Loading the models…');
    const scannerPromise = getScanner();
    setStatus('Opening the camera…');
    const cam = await openCamera(el.video, el.select.value || undefined);
    state.stream = cam.stream;
    applyCrop();
    setStatus('Loading the models…');
    await scannerPromise;
    setStatus('');
    el.start.textContent = 'Restart';
    state.ready = true;
    if (!document.hidden) startLoop();
  } catch (err) {
    stop();
    setStatus('');
    showError(err instanceof CameraError ? err.message : modelError(err));
  } finally {
    state.starting = false;
    el.start.disabled = false;
    if (state.restartRequested) {
      state.restartRequested = false;
      start();
    }
  }
}

function remember(deviceId) {
  try {
    localStorage.setItem(CAMERA_KEY, deviceId);
  } catch (err) {
    // Storage refused (private mode, quota): the choice is simply not remembered.
  }
}

function remembered() {
  try {
    return localStorage.getItem(CAMERA_KEY) || '';
  } catch (err) {
    return '';
  }
}

async function init() {
  try {
    const cams = await listCameras();
    el.select.replaceChildren(...cams.map((c) => new Option(c.label, c.deviceId)));
    el.select.value = pickCamera(cams, remembered());
    el.select.disabled = false;
    el.start.disabled = false;
    setStatus('Choose a camera and press Start.');
  } catch (err) {
    setStatus('');
    showError(err.message);
  }
  getScanner().catch((err) => showError(modelError(err)));
}

el.start.addEventListener('click', start);
el.select.addEventListener('change', () => {
  remember(el.select.value);
  if (state.stream || state.starting) start(); // switch camera
});
el.capture.addEventListener('click', capture);
// A phone turned mid-stream changes the frame size: recompute the crop.
el.video.addEventListener('resize', () => { if (state.stream && el.video.videoWidth) applyCrop(); });
document.addEventListener('visibilitychange', () => {
  if (document.hidden) stopLoop();
  else startLoop();
});

init();
