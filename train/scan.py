"""Find the card in photos, folders of photos or a video, and write it out flat.

    python train/scan.py IMG_0001.jpg IMG_0002.jpg --output scans/
    python train/scan.py photos/ --recursive --output scans/ --masks --overlays
    python train/scan.py clip.mp4 --frame-step 15 --output scans/
    python train/scan.py photos/ --output scans/ --letterbox --min-score 0.6 --threads 2 --overwrite

Every input (every sampled frame of a video) goes through the web app's preprocessing: the upright
image (EXIF orientation applied), its largest centred 3:4 portrait crop (or, with --letterbox, the
whole image with black bars) resized to the 480x640 model input. card_segmentation.onnx gives the
mask, card_corners.onnx the 4 corners and a score; the corners are mapped back to the upright
original and the card is warped from the full-resolution original to a 63:88 portrait image.

Output folder: scans/<name>.jpg (the flat card), masks/<name>.png and overlays/<name>.jpg when asked,
and scans.jsonl, one JSON object per input in input order (fields: train/README.md, scan.py).
Needs onnxruntime, numpy, opencv-python-headless and tqdm only (train/requirements-scan.txt).
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import os
import queue
import shutil
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np
from tqdm import tqdm
from tqdm.contrib.logging import logging_redirect_tqdm

from common import (
    EXPORT_DIR,
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    MASK_THRESHOLD,
    NO_CARD_SCORE,
    DataError,
    ScriptError,
    resolve_path,
    run_script,
)
from onnx_utils import ort_session
from photos import PHOTO_EXTS

logger = logging.getLogger(__name__)

DEFAULT_SEG_MODEL = os.path.join(EXPORT_DIR, "card_segmentation.onnx")
DEFAULT_CORNER_MODEL = os.path.join(EXPORT_DIR, "card_corners.onnx")
# The corner model's outputs (model card): corners (1, 4, 2) TL, TR, BR, BL in continuous pixels of
# the 480x640 input, and the card's score (1,).
CORNERS_OUTPUT, SCORE_OUTPUT = "corners", "score"
# A trading card is 63 x 88 mm: 10 px per mm by default.
DEFAULT_SCAN_SIZE = (630, 880)
# Cards scored between NO_CARD_SCORE and this are kept but flagged `low_score`.
DEFAULT_MIN_SCORE = 0.5
# Two samples a second of a 30 fps video.
DEFAULT_FRAME_STEP = 15
# Decoding threads: cv2 releases the GIL, so a few threads keep ahead of the models.
DEFAULT_WORKERS = min(4, os.cpu_count() or 1)
VIDEO_EXTS = (".mp4", ".mov", ".m4v", ".avi", ".mkv", ".webm")
JSONL = "scans.jsonl"
OUTPUT_DIRS = {"scan": "scans", "mask": "masks", "overlay": "overlays"}
STATUSES = ("ok", "low_score", "no_card", "unreadable")
JPEG_QUALITY = 95
PREVIEW_MAX_SIDE = 1024                      # overlays: the longer side, px
MASK_COLOUR_BGR = (235, 206, 135)            # the web app's light blue
# Letterbox bars are black: both models were trained with black fill where augmentation moved the
# frame (grey bars cost the detector accuracy; corners/trainer.py).
LETTERBOX_FILL = 0


# ----------------------------------------------------------------------------- geometry

@dataclass(frozen=True)
class Geometry:
    """Where the model input lies in the upright original, per axis, in continuous coordinates
    (an image of width W spans 0..W): model = original * scale + offset."""
    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) continuous model-input coordinates -> (N, 2) pixel-index coordinates of the original
        (the centre of the top-left pixel is (0, 0), as in corner_annotations.json)."""
        return (points - (self.offset_x, self.offset_y)) / (self.scale_x, self.scale_y) - 0.5

    def resized(self, kx: float, ky: float) -> Geometry:
        """The same model input seen from the original resized by (kx, ky)."""
        return Geometry(self.scale_x / kx, self.scale_y / ky, self.offset_x, self.offset_y)

    def index_affine(self) -> np.ndarray:
        """(2, 3) pixel-index original -> pixel-index model input (for cv2.warpAffine)."""
        return np.array([[self.scale_x, 0, 0.5 * self.scale_x + self.offset_x - 0.5],
                         [0, self.scale_y, 0.5 * self.scale_y + self.offset_y - 0.5]])


def centred_crop(width: int, height: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the largest centred 3:4 portrait region, in integer pixels: the web app's
    ImageUtils.centeredCrop34 (demo/js/image-utils.js), rounding halves up as Math.round does."""
    if width * IMAGE_HEIGHT >= height * IMAGE_WIDTH:            # wider than 3:4: keep the height
        h = height
        w = max(1, min(width, math.floor(height * IMAGE_WIDTH / IMAGE_HEIGHT + 0.5)))
    else:                                                       # taller: keep the width
        w = width
        h = max(1, min(height, math.floor(width * IMAGE_HEIGHT / IMAGE_WIDTH + 0.5)))
    return (width - w) // 2, (height - h) // 2, w, h


def _resize(image: np.ndarray, w: int, h: int) -> np.ndarray:
    shrink = w <= image.shape[1] and h <= image.shape[0]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def to_model_input(image: np.ndarray, letterbox: bool = False) -> tuple[np.ndarray, Geometry]:
    """(H, W, 3) uint8 upright original -> (640, 480, 3) uint8 model input and its Geometry.

    Crop (default, the web app's): the card keeps the most pixels, but a card near the long sides
    of a landscape photo is cut off. Letterbox: the whole photo is seen, smaller, with black bars.
    """
    height, width = image.shape[:2]
    if not letterbox:
        x, y, w, h = centred_crop(width, height)
        sx, sy = IMAGE_WIDTH / w, IMAGE_HEIGHT / h
        return _resize(image[y:y + h, x:x + w], IMAGE_WIDTH, IMAGE_HEIGHT), Geometry(sx, sy, -x * sx, -y * sy)
    s = min(IMAGE_WIDTH / width, IMAGE_HEIGHT / height)
    w = max(1, min(IMAGE_WIDTH, math.floor(width * s + 0.5)))
    h = max(1, min(IMAGE_HEIGHT, math.floor(height * s + 0.5)))
    x, y = (IMAGE_WIDTH - w) // 2, (IMAGE_HEIGHT - h) // 2
    out = np.full((IMAGE_HEIGHT, IMAGE_WIDTH, 3), LETTERBOX_FILL, np.uint8)
    out[y:y + h, x:x + w] = _resize(image, w, h)
    return out, Geometry(w / width, h / height, x, y)


def rectify(image: np.ndarray, corners: np.ndarray, size: tuple[int, int] = DEFAULT_SCAN_SIZE) -> np.ndarray:
    """The card warped flat: (size[1], size[0], 3) from the full-resolution image and its corners
    (4, 2) TL, TR, BR, BL in pixel-index coordinates; the corners land on the output's corners.

    A card lying sideways (its top and bottom edges longer than its sides) is turned a quarter
    turn to stay portrait: the corner at the photo's bottom left becomes the flat card's top left,
    as in the web app (demo/js/geometry.js, portraitOrder). Which way up a card lies is not known
    (its corners are ordered by their place in the photo), so such a card, like one upside down
    in the photo, may come out upside down. A card much
    larger than the output is first shrunk with area averaging, since the bilinear warp alone
    would alias fine print.
    """
    w, h = size
    quad = np.asarray(corners, np.float64)
    edge = np.linalg.norm(quad - np.roll(quad, -1, axis=0), axis=1)      # top, right, bottom, left
    if edge[0] + edge[2] > edge[1] + edge[3]:
        quad = np.roll(quad, 1, axis=0)                                   # BL, TL, TR, BR
        edge = np.roll(edge, 1)
    # Only the card's bounding box (plus a pixel of margin) is worked on.
    lo = np.clip(np.floor(quad.min(0)) - 1, 0, (image.shape[1], image.shape[0])).astype(int)
    hi = np.clip(np.ceil(quad.max(0)) + 2, 0, (image.shape[1], image.shape[0])).astype(int)
    if np.all(hi > lo):
        image, quad = image[lo[1]:hi[1], lo[0]:hi[0]], quad - lo
    ratio = min((edge[0] + edge[2]) / (2 * w), (edge[1] + edge[3]) / (2 * h))   # source px per output px
    if ratio > 2:
        sw, sh = max(1, round(image.shape[1] * 1.5 / ratio)), max(1, round(image.shape[0] * 1.5 / ratio))
        k = np.array([sw / image.shape[1], sh / image.shape[0]])
        image, quad = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA), (quad + 0.5) * k - 0.5
    # The output's outer pixel edges, in pixel-index coordinates.
    dst = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
    m = cv2.getPerspectiveTransform(quad.astype(np.float32), dst.astype(np.float32))
    return cv2.warpPerspective(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=(0, 0, 0))


def mask_in_original(prob: np.ndarray, geometry: Geometry, width: int, height: int) -> np.ndarray:
    """(640, 480) card probability -> (height, width) uint8 0/255 in the original's pixels (zero where
    the model input did not reach)."""
    p = cv2.warpAffine(prob, geometry.index_affine(), (width, height), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                       borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return np.where(p >= MASK_THRESHOLD, 255, 0).astype(np.uint8)


# ----------------------------------------------------------------------------- models

def _shape_fits(shape, expected: tuple[int, ...]) -> bool:
    """A declared ONNX shape fits when every fixed dimension equals the expected one (symbolic or
    unknown dimensions fit anything)."""
    return len(shape) == len(expected) and all(not isinstance(d, int) or d == e for d, e in zip(shape, expected))


def _describe(args) -> str:
    return ", ".join(f"{a.name} {a.type} {list(a.shape)}" for a in args) or "none"


def open_model(path: str, option: str, threads: int = 0):
    """An onnxruntime session whose single input takes the 1x3x640x480 frame, or a DataError naming
    the file (missing, not ONNX, other inputs)."""
    if not os.path.isfile(path):
        raise DataError(f"{option} {path}: model file not found")
    try:
        sess = ort_session(path, threads)
    except Exception as e:     # onnxruntime raises its own types, with multi-line messages
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(f"{option} {path}: not a readable ONNX model ({reason})") from None
    inputs = sess.get_inputs()
    want = (1, 3, IMAGE_HEIGHT, IMAGE_WIDTH)
    if len(inputs) != 1 or inputs[0].type != "tensor(float)" or not _shape_fits(inputs[0].shape, want):
        raise DataError(f"{option} {path}: expected one float32 input {list(want)} (RGB 0..1), found "
                        f"{_describe(inputs)}")
    return sess


class Scanner:
    """The two models on one 480x640 frame: card probability, corners and score."""

    def __init__(self, seg_model: str, corner_model: str, threads: int = 0):
        self.seg = open_model(seg_model, "--seg-model", threads)
        masks = [o for o in self.seg.get_outputs()
                 if o.type == "tensor(float)" and _shape_fits(o.shape, (1, 1, IMAGE_HEIGHT, IMAGE_WIDTH))]
        if not masks:
            raise DataError(f"--seg-model {seg_model}: expected a float32 output [1, 1, {IMAGE_HEIGHT}, {IMAGE_WIDTH}] "
                            f"(card probability, as card_segmentation.onnx's `mask`), found "
                            f"{_describe(self.seg.get_outputs())}")
        self.mask_output = next((o.name for o in masks if o.name == "mask"), masks[0].name)
        self.corners = open_model(corner_model, "--corner-model", threads)
        outputs = {o.name: o for o in self.corners.get_outputs()}
        c, s = outputs.get(CORNERS_OUTPUT), outputs.get(SCORE_OUTPUT)
        if c is None or s is None or not _shape_fits(c.shape, (1, 4, 2)) or not _shape_fits(s.shape, (1,)):
            raise DataError(f"--corner-model {corner_model}: expected outputs `{CORNERS_OUTPUT}` [1, 4, 2] and "
                            f"`{SCORE_OUTPUT}` [1] (card_corners.onnx; a file exported with --no-refine has "
                            f"only `output0`), found {_describe(self.corners.get_outputs())}")
        self.seg_input, self.corner_input = self.seg.get_inputs()[0].name, self.corners.get_inputs()[0].name
        self.x = np.empty((1, 3, IMAGE_HEIGHT, IMAGE_WIDTH), np.float32)     # reused for every frame

    def __call__(self, frame_bgr: np.ndarray) -> tuple[np.ndarray, np.ndarray, float]:
        """(640, 480, 3) uint8 BGR -> probability (640, 480), corners (4, 2) continuous model-input
        pixels TL, TR, BR, BL, score."""
        np.multiply(frame_bgr[..., ::-1].transpose(2, 0, 1), np.float32(1 / 255), out=self.x[0], dtype=np.float32)
        prob = self.seg.run([self.mask_output], {self.seg_input: self.x})[0][0, 0]
        corners, score = self.corners.run([CORNERS_OUTPUT, SCORE_OUTPUT], {self.corner_input: self.x})
        return prob, corners[0].astype(np.float64), float(score.reshape(-1)[0])


# ----------------------------------------------------------------------------- inputs

@dataclass
class Item:
    """One input: `source` as the user gave it (joined to its folder), `name` the unique output
    stem (relative path without extension)."""
    source: str
    path: str
    name: str
    video: bool


@dataclass
class Frame:
    item: Item
    index: int | None = None            # frame number in a video
    image: np.ndarray | None = None     # (H, W, 3) uint8 BGR, upright
    model_input: np.ndarray | None = None
    geometry: Geometry | None = None
    error: str | None = None


def list_inputs(paths: list[str], recursive: bool, output_dir: str) -> list[Item]:
    """Files as given (images or videos) and the images in folders (sorted; subfolders with
    --recursive; the output folder is skipped), each with an output name unique even when the
    filesystem ignores case."""
    items, used = [], set()

    def add(source: str, path: str, rel: str):
        stem, ext = os.path.splitext(rel)
        name, n = stem, 1
        while name.casefold() in used:
            n += 1
            name = f"{stem}_{n}"
        used.add(name.casefold())
        items.append(Item(source, path, name, ext.lower() in VIDEO_EXTS))

    for given in paths:
        real = resolve_path(given)
        if os.path.isfile(real):
            add(given, real, os.path.basename(real))
        elif os.path.isdir(real):
            found = []
            for root, dirs, files in os.walk(real, followlinks=True):
                dirs[:] = [d for d in dirs if recursive and os.path.realpath(os.path.join(root, d)) != output_dir]
                found += [os.path.relpath(os.path.join(root, f), real) for f in files
                          if f.lower().endswith(PHOTO_EXTS) and not f.startswith(".")]
            if not found:
                hint = "" if recursive else " (--recursive searches its subfolders)"
                raise DataError(f"{given}: no images ({', '.join(PHOTO_EXTS)}) in this folder{hint}")
            for rel in sorted(found):
                add(os.path.join(given, rel), os.path.join(real, rel), rel)
        else:
            raise DataError(f"{given}: no such file or folder")
    return items


def decode_file(path: str) -> np.ndarray:
    """(H, W, 3) uint8 BGR, upright (cv2.imdecode applies the EXIF orientation), or a DataError
    saying what is wrong with the file."""
    try:
        data = np.fromfile(path, np.uint8)
    except OSError as e:
        raise DataError(f"cannot read the file ({e.strerror})") from None
    if data.size == 0:
        raise DataError("empty file")
    try:
        img = cv2.imdecode(data, cv2.IMREAD_COLOR)
    except cv2.error as e:     # e.g. an image above OpenCV's pixel limit
        raise DataError(f"not a readable image ({e.err})") from None
    if img is None:
        raise DataError("not a readable image (corrupt or an unsupported format)")
    return img


def decode(item: Item, letterbox: bool) -> Frame:
    try:
        image = decode_file(item.path)
    except DataError as e:
        return Frame(item, error=str(e))
    return Frame(item, None, image, *to_model_input(image, letterbox))


def read_video(item: Item, step: int, letterbox: bool) -> Iterator[Frame]:
    """Every step-th frame (0, step, 2 step, ...), decoded in order; an unopenable video is one
    unreadable Frame. Rotation metadata is applied by OpenCV's FFmpeg backend."""
    cap = cv2.VideoCapture(item.path)
    try:
        if not cap.isOpened():
            yield Frame(item, error="not a readable video (corrupt or an unsupported format)")
            return
        index, sampled = 0, 0
        while True:
            if index % step:
                if not cap.grab():       # skipped frames are not decoded
                    break
            else:
                ok, image = cap.read()
                if not ok:
                    break
                sampled += 1
                yield Frame(item, index, image, *to_model_input(image, letterbox))
            index += 1
        if not sampled:
            yield Frame(item, error="no frame could be decoded from the video")
    finally:
        cap.release()


def count_frames(items: list[Item], step: int) -> int:
    """Expected number of records (a video's frame count is its container's estimate)."""
    total = 0
    for item in items:
        if item.video:
            cap = cv2.VideoCapture(item.path)
            total += max(1, math.ceil(int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) / step)) if cap.isOpened() else 1
            cap.release()
        else:
            total += 1
    return total


def iter_frames(items: list[Item], step: int, letterbox: bool, workers: int) -> Iterator[Frame]:
    """Frames in input order, decoded ahead on `workers` threads while the caller runs the models.

    A producer thread walks the inputs: images go to the pool, videos are read by the producer
    itself (a video decodes in order). A bounded queue of futures keeps at most workers + 2 full
    images in memory.
    """
    q: queue.Queue[Future | None] = queue.Queue(maxsize=workers + 2)
    stop = threading.Event()

    def put(fut: Future | None) -> bool:
        while not stop.is_set():
            try:
                q.put(fut, timeout=0.1)
                return True
            except queue.Full:
                pass
        return False

    def produce():
        pool = ThreadPoolExecutor(workers, thread_name_prefix="scan-decode")
        try:
            for item in items:
                if not item.video:
                    if not put(pool.submit(decode, item, letterbox)):
                        return
                    continue
                for frame in read_video(item, step, letterbox):
                    fut = Future()
                    fut.set_result(frame)
                    if not put(fut):
                        return
        except BaseException as e:     # a bug in the producer reaches the caller, not a silent end
            fut = Future()
            fut.set_exception(e)
            put(fut)
        finally:
            # Finished: the queued futures complete on their own. Stopped: drop what has not started.
            pool.shutdown(wait=not stop.is_set(), cancel_futures=stop.is_set())
            put(None)

    thread = threading.Thread(target=produce, name="scan-inputs", daemon=True)
    thread.start()
    try:
        while (fut := q.get()) is not None:
            yield fut.result()
    finally:
        stop.set()
        thread.join()


# ----------------------------------------------------------------------------- outputs

def check_output(path: str, overwrite: bool) -> None:
    """A non-empty output folder is refused without --overwrite."""
    if os.path.exists(path) and not os.path.isdir(path):
        raise DataError(f"--output {path}: not a folder")
    if not overwrite and os.path.isdir(path) and os.listdir(path):
        raise DataError(f"--output {path}: folder is not empty; use --overwrite to replace its scans")


def clear_output(path: str) -> None:
    """--overwrite: remove what an earlier scan wrote (scans.jsonl and the scans/, masks/,
    overlays/ folders), nothing else the folder holds."""
    for name in (JSONL, *OUTPUT_DIRS.values()):
        p = os.path.join(path, name)
        if os.path.isdir(p) and not os.path.islink(p):
            shutil.rmtree(p)
        elif os.path.lexists(p):
            os.remove(p)


def write_image(out_dir: str, rel: str, image: np.ndarray) -> str:
    path = os.path.join(out_dir, rel)
    ext = os.path.splitext(rel)[1]
    ok, buf = cv2.imencode(ext, image, [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY] if ext == ".jpg" else [])
    if not ok:
        raise ScriptError(f"{path}: OpenCV could not encode the image")
    try:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "wb") as f:
            f.write(buf.tobytes())
    except OSError as e:
        raise ScriptError(f"{path}: cannot write ({e.strerror})") from None
    return rel.replace(os.sep, "/")


def draw_overlay(image: np.ndarray, geometry: Geometry, prob: np.ndarray, corners: np.ndarray | None,
                 status: str, score: float) -> np.ndarray:
    """A preview at most PREVIEW_MAX_SIDE px: the mask in light blue, the model input's region in
    grey, the corners (numbered 1-4 from top left) green when ok, orange when low_score."""
    h, w = image.shape[:2]
    k = min(1.0, PREVIEW_MAX_SIDE / max(h, w))
    pw, ph = max(1, round(w * k)), max(1, round(h * k))
    out = cv2.resize(image, (pw, ph), interpolation=cv2.INTER_AREA)
    g = geometry.resized(pw / w, ph / h)
    card = mask_in_original(prob, g, pw, ph) > 0
    out[card] = (0.55 * out[card] + 0.45 * np.array(MASK_COLOUR_BGR)).astype(np.uint8)
    region = np.round(g.to_original(np.array([[0, 0], [IMAGE_WIDTH, IMAGE_HEIGHT]], np.float64))).astype(int)
    cv2.rectangle(out, tuple(region[0]), tuple(region[1]), (160, 160, 160), 1)
    colour = (0, 200, 0) if status == "ok" else (0, 140, 255)
    if corners is not None:
        pts = (corners + 0.5) * (pw / w, ph / h) - 0.5
        cv2.polylines(out, [np.round(pts).astype(np.int32)], True, colour, 2, cv2.LINE_AA)
        for i, (x, y) in enumerate(np.round(pts).astype(int)):
            cv2.circle(out, (x, y), 4, colour, -1, cv2.LINE_AA)
            cv2.putText(out, str(i + 1), (x + 6, y - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.6, colour, 2, cv2.LINE_AA)
    cv2.putText(out, f"{status} {score:.2f}", (8, 24), cv2.FONT_HERSHEY_SIMPLEX, 0.7, colour, 2, cv2.LINE_AA)
    return out


def scan_frame(scanner: Scanner, frame: Frame, args: argparse.Namespace, out_dir: str) -> dict:
    """One input through the models and out to the output folder; its scans.jsonl record."""
    item = frame.item
    record = {"source": item.source}
    name = item.name
    if frame.index is not None:
        record["frame"] = frame.index
        name = f"{item.name}_frame{frame.index:06d}"
    if frame.error is not None:
        return record | {"status": "unreadable", "error": frame.error, "score": None, "corners": None,
                         "card_area": None, "size": None, "scan": None}
    prob, corners, score = scanner(frame.model_input)
    if not (np.isfinite(score) and np.all(np.isfinite(corners))):
        raise ScriptError(f"{args.corner_model} returned non-finite corners or score on {item.source}")
    status = "no_card" if score < NO_CARD_SCORE else "low_score" if score < args.min_score else "ok"
    height, width = frame.image.shape[:2]
    found = frame.geometry.to_original(corners) if status != "no_card" else None
    record |= {"status": status, "score": round(score, 4),
               "corners": None if found is None else np.round(found, 2).tolist(),
               "card_area": round(float(np.mean(prob >= MASK_THRESHOLD)), 4), "size": [width, height],
               "scan": None}
    if found is not None:
        record["scan"] = write_image(out_dir, os.path.join(OUTPUT_DIRS["scan"], name + "." + args.format),
                                     rectify(frame.image, found, tuple(args.scan_size)))
    if args.masks:
        record["mask"] = write_image(out_dir, os.path.join(OUTPUT_DIRS["mask"], name + ".png"),
                                     mask_in_original(prob, frame.geometry, width, height))
    if args.overlays:
        record["overlay"] = write_image(out_dir, os.path.join(OUTPUT_DIRS["overlay"], name + ".jpg"),
                                        draw_overlay(frame.image, frame.geometry, prob, found, status, score))
    return record


# ----------------------------------------------------------------------------- main

def main(args: argparse.Namespace) -> dict:
    if not 0 <= args.min_score <= 1:
        raise DataError(f"--min-score {args.min_score}: expected a score in 0..1")
    for option, value, least in (("--frame-step", args.frame_step, 1), ("--workers", args.workers, 1),
                                 ("--threads", args.threads, 0), ("--scan-size", min(args.scan_size), 1)):
        if value < least:
            raise DataError(f"{option}: expected {'a positive number' if least else '0 or more'}, got {value}")
    out_dir = resolve_path(args.output)
    # Everything is checked before anything is written: output folder, inputs, then both models.
    check_output(out_dir, args.overwrite)
    items = list_inputs(args.inputs, args.recursive, out_dir)
    scanner = Scanner(resolve_path(args.seg_model), resolve_path(args.corner_model), args.threads)
    clear_output(out_dir)
    os.makedirs(out_dir, exist_ok=True)

    counts = Counter()
    jsonl = os.path.join(out_dir, JSONL)
    start = time.perf_counter()
    with open(jsonl, "w") as f, logging_redirect_tqdm(), \
            tqdm(total=count_frames(items, args.frame_step), unit="img", desc="scan", disable=args.quiet) as bar:
        for frame in iter_frames(items, args.frame_step, args.letterbox, args.workers):
            record = scan_frame(scanner, frame, args, out_dir)
            f.write(json.dumps(record) + "\n")
            counts[record["status"]] += 1
            bar.update()
            if record["status"] == "unreadable":
                logger.warning("%s: %s (skipped)", record["source"], record["error"])
    seconds = time.perf_counter() - start
    total = sum(counts.values())
    logger.info("%d inputs in %.1f s (%.2f images/s): %s -> %s", total, seconds, total / max(seconds, 1e-9),
                ", ".join(f"{counts[s]} {s}" for s in STATUSES), jsonl)
    if args.strict and counts["unreadable"]:
        raise ScriptError(f"{counts['unreadable']} of {total} inputs unreadable (--strict); see {jsonl}")
    return {"counts": dict(counts), "total": total, "seconds": seconds, "jsonl": jsonl}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Find the card in photos, folders or a video; write it out flat, "
                                "with its corners in scans.jsonl", add_help=add_help)
    p.add_argument("inputs", nargs="+", help="image files, folders of images, or video files")
    p.add_argument("-o", "--output", required=True, help="output folder (refused when not empty, see --overwrite)")
    p.add_argument("-r", "--recursive", action="store_true", help="also the images in subfolders of a folder")
    p.add_argument("--frame-step", type=int, default=DEFAULT_FRAME_STEP, help="videos: every Nth frame (%(default)s)")
    p.add_argument("--letterbox", action="store_true", help="give the models the whole image with black bars "
                   "instead of the app's centred 3:4 crop: finds cards near the sides of a landscape photo, "
                   "but the card gets fewer pixels")
    p.add_argument("--seg-model", default=DEFAULT_SEG_MODEL, help="segmentation ONNX (input 1x3x640x480, mask output)")
    p.add_argument("--corner-model", default=DEFAULT_CORNER_MODEL, help="corner ONNX (corners and score outputs)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads per model (0: one per core)")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="image decoding threads (%(default)s)")
    p.add_argument("--min-score", type=float, default=DEFAULT_MIN_SCORE,
                   help=f"below this corner score (%(default)s; and above {NO_CARD_SCORE}) a card is flagged low_score")
    p.add_argument("--scan-size", type=int, nargs=2, default=list(DEFAULT_SCAN_SIZE), metavar=("W", "H"),
                   help="size of the flat card image in px (%(default)s: 63:88, the card's own proportions)")
    p.add_argument("--format", choices=("jpg", "png"), default="jpg",
                   help=f"flat card image format (JPEG at quality {JPEG_QUALITY}, or PNG)")
    p.add_argument("--masks", action="store_true", help="write masks/<name>.png (0/255, the original's size)")
    p.add_argument("--overlays", action="store_true", help="write overlays/<name>.jpg previews")
    p.add_argument("--overwrite", action="store_true", help="write into a non-empty output folder, replacing "
                   "an earlier scan's outputs")
    p.add_argument("--strict", action="store_true", help="exit with code 1 when any input is unreadable")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


if __name__ == "__main__":
    run_script(main, get_args_parser)
