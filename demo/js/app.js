// Wires the page: camera list, start, the frame loop, footer and errors.

import { CameraError, listCameras, openCamera, stopStream } from './camera.js';
import { ImageUtils, MODEL_HEIGHT, MODEL_WIDTH } from './image-utils.js';
import { Overlay } from './overlay.js';
import { Segmenter } from './segmenter.js';

const FPS_WINDOW_MS = 1000;

const el = {
  select: document.querySelector('[data-testid="camera-select"]'),
  start: document.querySelector('[data-testid="start"]'),
  error: document.querySelector('[data-testid="error"]'),
  backend: document.querySelector('[data-testid="backend"]'),
  fps: document.querySelector('[data-testid="fps"]'),
  resolution: document.querySelector('[data-testid="resolution"]'),
  status: document.querySelector('#status'),
  video: document.querySelector('#video'),
  view: document.querySelector('#view'),
  overlay: document.querySelector('[data-testid="overlay"]'),
};

// Allocated once: the model input canvas, the overlay, the segmenter's tensor.
const input = document.createElement('canvas');
input.width = MODEL_WIDTH;
input.height = MODEL_HEIGHT;
const inputCtx = input.getContext('2d', { willReadFrequently: true });
const viewCtx = el.view.getContext('2d');
const overlay = new Overlay(el.overlay);

const state = {
  segmenter: null,
  segmenterPromise: null,
  stream: null,
  crop: null,
  running: false,
  ready: false, // a start finished: camera open and segmenter created
  starting: false,
  restartRequested: false,
  busy: false,
  frameHandle: 0,
  lastMediaTime: -1,
  fpsCount: 0,
  fpsStart: 0,
  generation: 0, // bumps on every stop so stale callbacks do nothing
};

function showError(message) {
  el.error.textContent = message; // textContent: never HTML from an error
  el.error.hidden = !message;
}

function setStatus(text) {
  el.status.textContent = text;
}

function getSegmenter() {
  if (!state.segmenterPromise) {
    state.segmenterPromise = Segmenter.create({ log: (m) => console.info(m) }).then((seg) => {
      state.segmenter = seg;
      el.backend.textContent = seg.label;
      el.backend.title = `${seg.label}, ${seg.precision.toUpperCase()} model`;
      return seg;
    });
  }
  return state.segmenterPromise;
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
  const mediaTime = metadata ? metadata.mediaTime : el.video.currentTime;
  // One frame in flight, and never the same frame twice.
  if (!state.busy && mediaTime !== state.lastMediaTime) {
    state.lastMediaTime = mediaTime;
    state.busy = true;
    infer(state.generation);
  }
  scheduleFrame();
}

async function infer(generation) {
  const { sx, sy, sw, sh } = state.crop;
  try {
    // The same crop as the view, scaled into the 480x640 model input with one drawImage.
    inputCtx.drawImage(el.video, sx, sy, sw, sh, 0, 0, MODEL_WIDTH, MODEL_HEIGHT);
    const rgba = inputCtx.getImageData(0, 0, MODEL_WIDTH, MODEL_HEIGHT).data;
    ImageUtils.rgbaToPlanar(rgba, state.segmenter.input, MODEL_WIDTH * MODEL_HEIGHT);
    const prob = await state.segmenter.run();
    if (generation !== state.generation) return; // stopped meanwhile: drop the result
    overlay.draw(prob);
    countFrame();
  } catch (err) {
    if (generation !== state.generation) return; // a stopped session's error is not news
    showError(`Inference failed: ${err && err.message ? err.message : err}`);
    stop();
  } finally {
    state.busy = false;
  }
}

function countFrame() {
  const now = performance.now();
  state.fpsCount += 1;
  const elapsed = now - state.fpsStart;
  if (elapsed >= FPS_WINDOW_MS) {
    el.fps.textContent = ((state.fpsCount * 1000) / elapsed).toFixed(1);
    state.fpsCount = 0;
    state.fpsStart = now;
  }
}

function startLoop() {
  if (state.running || !state.ready) return;
  state.running = true;
  state.lastMediaTime = -1;
  state.fpsCount = 0;
  state.fpsStart = performance.now();
  scheduleFrame();
}

function stopLoop() {
  state.running = false;
  state.generation += 1;
  cancelFrame();
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
    setStatus('Loading the model…');
    const segPromise = getSegmenter();
    setStatus('Opening the camera…');
    const cam = await openCamera(el.video, el.select.value || undefined);
    state.stream = cam.stream;
    applyCrop();
    await segPromise;
    setStatus('');
    el.start.textContent = 'Restart';
    state.ready = true;
    if (!document.hidden) startLoop();
  } catch (err) {
    stop();
    setStatus('');
    if (err instanceof CameraError) showError(err.message);
    else if (err && err.kind === 'model') showError(`${err.message} Check that the server can see train/exported_models/.`);
    else showError(err && err.message ? err.message : String(err));
    if (err && err.kind === 'model') state.segmenterPromise = null; // let the next Start retry the download
  } finally {
    state.starting = false;
    el.start.disabled = false;
    if (state.restartRequested) {
      state.restartRequested = false;
      start();
    }
  }
}

async function init() {
  try {
    const cams = await listCameras();
    el.select.replaceChildren(...cams.map((c) => new Option(c.label, c.deviceId)));
    el.select.disabled = false;
    el.start.disabled = false;
    setStatus('Choose a camera and press Start.');
  } catch (err) {
    setStatus('');
    showError(err.message);
  }
  getSegmenter().catch((err) => {
    if (err.kind === 'model') state.segmenterPromise = null; // Start downloads it again
    showError(err.kind === 'model' ? `${err.message} Check that the server can see train/exported_models/.` : err.message);
  });
}

el.start.addEventListener('click', start);
el.select.addEventListener('change', () => { if (state.stream || state.starting) start(); }); // switch camera
// A phone turned mid-stream changes the frame size: recompute the crop.
el.video.addEventListener('resize', () => { if (state.stream && el.video.videoWidth) applyCrop(); });
document.addEventListener('visibilitychange', () => {
  if (document.hidden) stopLoop();
  else startLoop();
});

init();
