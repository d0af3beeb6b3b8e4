// The inference worker: the models, the per-frame work and the scan warp, off the page's main
// thread (on WASM a session.run blocks its thread for the whole inference; README, The web app).
//
// Every frame: the segmentation model. With a card in the mask, the card the app takes comes either
// from the corner model (every card found, the frame's card refined: "detect") or, between corner
// model runs, from the refiner alone on the last card's corners ("track", about a tenth of the
// corner model's time); a track that moves too far, no longer makes a card's shape or leaves the mask
// falls back to the corner model on the same frame. A card is the app's only when its centre lies in
// the guide and the mask agrees with its quad (agreement.js); other cards the corner model found and
// the mask confirms are drawn faint.
//
// Messages in:  {type: 'init', threads?, wasmOnly?}
//               {type: 'frame', id, bitmap: ImageBitmap (transferred, full camera frame),
//                crop: {sx, sy, sw, sh}}
//               {type: 'capture', id, mime, quality}
//               {type: 'bench', id, runs, warmup, cornersEvery, track}  bare timing of the scheduled
//                                                    work (track: the refiner between corner model runs)
//               {type: 'forget'}                     drop the kept frame and the track (camera stopped)
// Messages out: {type: 'ready', id, models: {name: {backend, precision, url}}}
//               {type: 'result', id, mask: Float32Array (transferred), cardFraction, ran: 'detect' |
//                'track' | '', found, corners: Float32Array(8) pixel-index | null, score,
//                others: Float32Array(8 n) pixel-index (the faint cards), ms: {prep, segmentation,
//                corners, post}}
//               {type: 'scan', id, blob, width, height, quad, frame, warpMs}
//                                                    quad: corners in the frame, frame: its size
//               {type: 'bench', id, ...timings}
//               {type: 'error', id, kind, message}

import { CardTracker } from './corners.js';
import { cropToFrame, portraitOrder, SCAN_HEIGHT, SCAN_WIDTH, warpQuad } from './geometry.js';
import { ImageUtils, MASK_THRESHOLD, MODEL_HEIGHT, MODEL_WIDTH } from './image-utils.js';
import { chooseBackends, createInput, loadModelList, Model, timeSchedule } from './inference.js';

// The corner model runs only when the mask holds at least this share of card pixels: a card of the
// single-card training scenes covers at least 10 % of the frame, and the app's card (in the guide)
// is far larger than 2 %, while an empty frame's stray pixels stay below it and cost the
// segmentation model alone.
export const MIN_CARD_FRACTION = 0.02;
const PIXELS = MODEL_WIDTH * MODEL_HEIGHT;

// Allocated once: the model input canvas, the shared input tensor, the card tracker.
const canvas = new OffscreenCanvas(MODEL_WIDTH, MODEL_HEIGHT);
const ctx = canvas.getContext('2d', { willReadFrequently: true });
let input = null;
let models = null; // {segmentation, corners, refiner: Model}
let names = null; // output names: {mask, corners, score, cards, cardScores, refined, valid}
const tracker = new CardTracker();
const corners = new Float32Array(8); // the app's card, pixel-index (what the result carries)
// The newest frame with corners: what a capture warps. bitmap is null when there is none.
const kept = { bitmap: null, crop: { sx: 0, sy: 0, sw: 0, sh: 0 }, corners: new Float32Array(8) };
let frameCanvas = null; // full-resolution copy of `kept` for reading its pixels, capture only
let scanCanvas = null;
let scanImage = null;

function reply(message, transfer = []) {
  self.postMessage(message, transfer);
}

function fail(id, err) {
  reply({ type: 'error', id, kind: (err && err.kind) || 'inference', message: err && err.message ? err.message : String(err) });
}

function outputName(model, wanted) {
  if (!model.outputNames.includes(wanted)) {
    throw Object.assign(new Error(`${model.url} has no output '${wanted}' (outputs: ${model.outputNames.join(', ')}).`),
      { kind: 'backend' });
  }
  return wanted;
}

async function init({ threads, wasmOnly }) {
  const urls = await loadModelList();
  const attempts = await chooseBackends({ threads, wasmOnly });
  input = createInput();
  const segmentation = await Model.create(urls.segmentation, attempts, input);
  const cornerModel = await Model.create(urls.corners, attempts, input);
  const refiner = await Model.create(urls.refiner, attempts, input);
  models = { segmentation, corners: cornerModel, refiner };
  // The segmentation model has one output (its card probability); the corner models' answers are
  // in the outputs named by the model card.
  names = {
    mask: segmentation.outputNames[0],
    corners: outputName(cornerModel, 'corners'),
    score: outputName(cornerModel, 'score'),
    cards: outputName(cornerModel, 'cards'),
    cardScores: outputName(cornerModel, 'card_scores'),
    refined: outputName(refiner, 'corners'),
    valid: outputName(refiner, 'valid'),
  };
  const info = {};
  for (const [name, m] of Object.entries(models)) info[name] = { backend: m.backend, precision: m.precision, url: m.url };
  return info;
}

/** Keeps `bitmap` (or none) with the crop and corners it was analysed with; closes the one before. */
function keep(bitmap, crop, points) {
  if (kept.bitmap) kept.bitmap.close();
  kept.bitmap = bitmap;
  if (!bitmap) return;
  Object.assign(kept.crop, crop);
  kept.corners.set(points);
}

/** Card pixels (p >= 0.5) as a share of the mask. */
function cardFraction(mask) {
  let n = 0;
  for (let i = 0; i < mask.length; i += 1) if (mask[i] >= MASK_THRESHOLD) n += 1;
  return n / mask.length;
}

/** The corner model on the current input: the tracker chooses the app's card. */
async function detect(mask) {
  const out = await models.corners.run();
  return tracker.detected(mask, out[names.cards].data, out[names.cardScores].data, out[names.corners].data,
    out[names.score].data[0]);
}

/** The refiner on the app's card of the last frame: true when it still finds that card here. */
async function follow(mask) {
  models.refiner.quad.data.set(tracker.chosen);
  const out = await models.refiner.run();
  return tracker.followed(mask, out[names.refined].data, out[names.valid].data[0]);
}

async function processFrame({ id, bitmap, crop }) {
  let owned = bitmap;
  try {
    const t0 = performance.now();
    // The crop scaled into the 480x640 model input with one drawImage, as the model card says.
    ctx.drawImage(bitmap, crop.sx, crop.sy, crop.sw, crop.sh, 0, 0, MODEL_WIDTH, MODEL_HEIGHT);
    ImageUtils.rgbaToPlanar(ctx.getImageData(0, 0, MODEL_WIDTH, MODEL_HEIGHT).data, input.data, PIXELS);
    const t1 = performance.now();
    const seg = await models.segmentation.run();
    const t2 = performance.now();
    let mask = seg[names.mask].data; // Float32Array(640 * 480)
    const fraction = cardFraction(mask);
    let found = false;
    let ran = '';
    let cornersMs = 0;
    if (fraction >= MIN_CARD_FRACTION) {
      const t3 = performance.now();
      if (tracker.follows && await follow(mask)) {
        ran = 'track';
        found = true;
      } else {
        ran = 'detect';
        found = await detect(mask);
      }
      cornersMs = performance.now() - t3;
    } else {
      tracker.reset();
    }
    if (found) {
      keep(bitmap, crop, tracker.pixelCorners(corners));
      owned = null; // kept for a capture; closed when the next frame with corners replaces it
    } else {
      keep(null); // no card of the app's on this frame: nothing to capture
    }
    // A view of a larger buffer cannot be transferred whole: copy it (not the case on WASM).
    if (mask.byteOffset !== 0 || mask.byteLength !== mask.buffer.byteLength) mask = mask.slice();
    // post: the loops over the outputs (card fraction, corner reading, agreement), the models excluded.
    const post = performance.now() - t2 - cornersMs;
    reply({
      type: 'result', id, mask, cardFraction: fraction, ran, found,
      corners: found ? corners : null, score: tracker.score, // postMessage copies corners
      // The faint cards of a corner model run; a refiner frame keeps the last ones (null), and a
      // frame without a card in the mask has none.
      others: ran === 'detect' ? tracker.others.subarray(0, 8 * tracker.nOthers)
        : ran === 'track' ? null : tracker.others.subarray(0, 0),
      ms: { prep: t1 - t0, segmentation: t2 - t1, corners: cornersMs, post },
    }, [mask.buffer]);
  } finally {
    if (owned) owned.close();
  }
}

async function capture({ id, mime, quality }) {
  if (!kept.bitmap) throw Object.assign(new Error('No card to capture.'), { kind: 'capture' });
  // Everything up to convertToBlob runs before the next frame can replace (and close) `kept`.
  const { bitmap, crop } = kept;
  const frame = [bitmap.width, bitmap.height];
  const quad = portraitOrder(cropToFrame(kept.corners, crop, MODEL_WIDTH, MODEL_HEIGHT));
  // Full-resolution pixels of the frame the corners were computed on (capture only, not per frame).
  if (!frameCanvas || frameCanvas.width !== bitmap.width || frameCanvas.height !== bitmap.height) {
    frameCanvas = new OffscreenCanvas(bitmap.width, bitmap.height);
  }
  const fctx = frameCanvas.getContext('2d', { willReadFrequently: true });
  fctx.drawImage(bitmap, 0, 0);
  const src = fctx.getImageData(0, 0, bitmap.width, bitmap.height);
  if (!scanCanvas) {
    scanCanvas = new OffscreenCanvas(SCAN_WIDTH, SCAN_HEIGHT);
    scanImage = new ImageData(SCAN_WIDTH, SCAN_HEIGHT);
  }
  const t0 = performance.now();
  warpQuad(src, quad, scanImage);
  const warpMs = performance.now() - t0;
  scanCanvas.getContext('2d').putImageData(scanImage, 0, 0);
  const blob = await scanCanvas.convertToBlob({ type: mime, quality });
  reply({ type: 'scan', id, blob, width: SCAN_WIDTH, height: SCAN_HEIGHT, quad, frame, warpMs });
}

/** Bare timings of the scheduled work on the current input (the probe picture after init). */
async function bench({ id, runs, warmup, cornersEvery, track }) {
  const times = await timeSchedule(models.segmentation, models.corners,
    { runs, warmup, cornersEvery, refiner: track ? models.refiner : null });
  reply({ type: 'bench', id, ...times });
}

async function handle(msg) {
  try {
    if (msg.type === 'init') reply({ type: 'ready', id: msg.id, models: await init(msg) });
    else if (msg.type === 'frame') await processFrame(msg);
    else if (msg.type === 'capture') await capture(msg);
    else if (msg.type === 'bench') await bench(msg);
    else if (msg.type === 'forget') { keep(null); tracker.reset(); }
  } catch (err) {
    if (msg.type === 'frame' && msg.bitmap) msg.bitmap.close();
    fail(msg.id, err);
  }
}

// Everything but a capture runs in arrival order, one at a time (the models share one input
// tensor); a capture reads only the kept frame, so it need not wait for the frame in flight.
let queue = Promise.resolve();
self.onmessage = ({ data: msg }) => {
  if (msg.type === 'capture') handle(msg);
  else queue = queue.then(() => handle(msg));
};
