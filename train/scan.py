"""Find the cards in photos, folders of photos or a video, and write each out flat.

    python train/scan.py IMG_0001.jpg IMG_0002.jpg --output scans/
    python train/scan.py photos/ --recursive --output scans/ --masks --overlays
    python train/scan.py clip.mp4 --frame-step 15 --output scans/
    python train/scan.py photos/ --output scans/ --central --min-score 0.6 --threads 2 --overwrite

Every input (every sampled frame of a video) is read upright (EXIF orientation applied) and seen
through 3:4 views scaled to the 480x640 model input (scanning/geometry.py): by default tiles of the
web app's centred-crop size covering the whole photo, plus the whole photo when it needs several
tiles; --letterbox the whole photo alone; --central the centred crop alone and its one card, as the
web app takes it. card_segmentation.onnx gives the mask, card_corners.onnx every card and
card_corners_refiner.onnx refines each; a card is `ok` when its score reaches --min-score and the
mask agrees with its quad (scanning/agreement.py). Each card is mapped back to the upright original
and warped flat from it to a 63:88 portrait image.

Output folder: scans/<name>_card<k>.jpg (cards in reading order; --central: scans/<name>.jpg),
masks/<name>.png and overlays/<name>.jpg when asked, and scans.jsonl, one JSON object per card (one
`no_card` object for an input without a card) in input order (fields: train/README.md, scan.py).
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

from common import EXPORT_DIR, OK_SCORE, DataError, ScriptError, resolve_path, run_script
from scanning.geometry import DEFAULT_SCAN_SIZE, Geometry, prob_in_original, rectify, views
from scanning.pipeline import PhotoCard, Scanner, merge_views
from synthetic.photos import PHOTO_EXTS

logger = logging.getLogger(__name__)

DEFAULT_SEG_MODEL = os.path.join(EXPORT_DIR, "card_segmentation.onnx")
DEFAULT_CORNER_MODEL = os.path.join(EXPORT_DIR, "card_corners.onnx")
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


def refiner_for(corner_model: str) -> str:
    """card_corners_refiner.onnx next to card_corners.onnx (or its _fp32 twin): export_corners.py writes both."""
    return os.path.splitext(corner_model)[0].removesuffix("_fp32") + "_refiner.onnx"


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
    views: list[tuple[np.ndarray, Geometry]] | None = None    # (640, 480, 3) model inputs, Geometry
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


def decode(item: Item, mode: str) -> Frame:
    try:
        image = decode_file(item.path)
    except DataError as e:
        return Frame(item, error=str(e))
    return Frame(item, None, image, views(image, mode))


def read_video(item: Item, step: int, mode: str) -> Iterator[Frame]:
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
                yield Frame(item, index, image, views(image, mode))
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


def iter_frames(items: list[Item], step: int, mode: str, workers: int) -> Iterator[Frame]:
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
                    if not put(pool.submit(decode, item, mode)):
                        return
                    continue
                for frame in read_video(item, step, mode):
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


def draw_overlay(image: np.ndarray, prob: np.ndarray, cards: list[tuple[np.ndarray, str]],
                 regions: list[tuple[float, float, float, float]]) -> np.ndarray:
    """A preview at most PREVIEW_MAX_SIDE px: the mask (the original's (H, W) probability) in light
    blue, each view's region in grey, each card's outline numbered 1, 2, ... in reading order, green
    when ok, orange when low_score."""
    h, w = image.shape[:2]
    k = min(1.0, PREVIEW_MAX_SIDE / max(h, w))
    pw, ph = max(1, round(w * k)), max(1, round(h * k))
    out = cv2.resize(image, (pw, ph), interpolation=cv2.INTER_AREA)
    card = cv2.resize(prob, (pw, ph), interpolation=cv2.INTER_LINEAR) >= 0.5
    out[card] = (0.55 * out[card] + 0.45 * np.array(MASK_COLOUR_BGR)).astype(np.uint8)
    for x0, y0, x1, y1 in regions:
        cv2.rectangle(out, (round(x0 * k), round(y0 * k)), (round(x1 * k) - 1, round(y1 * k) - 1), (160, 160, 160), 1)
    for n, (corners, status) in enumerate(cards, 1):
        colour = (0, 200, 0) if status == "ok" else (0, 140, 255)
        pts = np.round((corners + 0.5) * k - 0.5).astype(np.int32)
        cv2.polylines(out, [pts], True, colour, 2, cv2.LINE_AA)
        cx, cy = pts.mean(0).astype(int)
        cv2.putText(out, str(n), (int(cx) - 8, int(cy) + 8), cv2.FONT_HERSHEY_SIMPLEX, 0.9, colour, 2, cv2.LINE_AA)
    return out


def card_status(card: PhotoCard, min_score: float) -> str:
    return "ok" if card.score >= min_score and card.agrees else "low_score"


def scan_frame(scanner: Scanner, frame: Frame, args: argparse.Namespace, out_dir: str) -> list[dict]:
    """One input through the models and out to the output folder; its scans.jsonl records (one per
    card, or one `no_card`)."""
    item = frame.item
    base = {"source": item.source}
    name = item.name
    if frame.index is not None:
        base["frame"] = frame.index
        name = f"{item.name}_frame{frame.index:06d}"
    if frame.error is not None:
        return [base | {"status": "unreadable", "error": frame.error, "card": None, "cards": None, "score": None,
                        "mask_agrees": None, "corners": None, "card_area": None, "size": None, "scan": None}]
    height, width = frame.image.shape[:2]
    try:
        results = [(scanner(view), geometry) for view, geometry in frame.views]
    except ValueError as e:
        raise ScriptError(f"{args.corner_model} on {item.source}: {e}") from None
    if args.central:
        result, geometry = results[0]
        central = [] if result.central is None else [result.cards[result.central]]
        cards = [PhotoCard(geometry.to_original(c.quad), c.score, c.agrees, 0, True, geometry.scale_x)
                 for c in central]
    else:
        cards = merge_views(results, width, height)
    # The mask in the original: the most confident view at each pixel.
    prob = np.zeros((height, width), np.float32)
    for result, geometry in results:
        np.maximum(prob, prob_in_original(result.prob, geometry, width, height), out=prob)
    base |= {"card_area": round(float(np.mean(prob >= 0.5)), 4), "size": [width, height]}
    extras = {}
    if args.masks:
        extras["mask"] = write_image(out_dir, os.path.join(OUTPUT_DIRS["mask"], name + ".png"),
                                     np.where(prob >= 0.5, 255, 0).astype(np.uint8))
    statuses = [card_status(c, args.min_score) for c in cards]
    if args.overlays:
        drawn = draw_overlay(frame.image, prob, [(c.corners, s) for c, s in zip(cards, statuses)],
                             [g.region(width, height) for _, g in results])
        extras["overlay"] = write_image(out_dir, os.path.join(OUTPUT_DIRS["overlay"], name + ".jpg"), drawn)
    if not cards:
        return [base | {"status": "no_card", "card": None, "cards": 0, "score": round(max(
            [c.score for r, _ in results for c in r.cards] or [0.0]), 4), "mask_agrees": None, "corners": None,
                        "scan": None} | extras]
    records = []
    for k, (card, status) in enumerate(zip(cards, statuses), 1):
        stem = name if args.central else f"{name}_card{k}"
        scan = write_image(out_dir, os.path.join(OUTPUT_DIRS["scan"], stem + "." + args.format),
                           rectify(frame.image, card.corners, tuple(args.scan_size)))
        records.append(base | {"card": k, "cards": len(cards), "status": status, "score": round(card.score, 4),
                               "mask_agrees": card.agrees, "corners": np.round(card.corners, 2).tolist(),
                               "scan": scan} | extras)
    return records


# ----------------------------------------------------------------------------- main

def main(args: argparse.Namespace) -> dict:
    if not 0 <= args.min_score <= 1:
        raise DataError(f"--min-score {args.min_score}: expected a score in 0..1")
    for option, value, least in (("--frame-step", args.frame_step, 1), ("--workers", args.workers, 1),
                                 ("--threads", args.threads, 0), ("--scan-size", min(args.scan_size), 1)):
        if value < least:
            raise DataError(f"{option}: expected {'a positive number' if least else '0 or more'}, got {value}")
    if args.central and args.letterbox:
        raise DataError("--central takes the app's centred crop; --letterbox the whole photo: choose one")
    mode = "crop" if args.central else "letterbox" if args.letterbox else "tiles"
    out_dir = resolve_path(args.output)
    # Everything is checked before anything is written: output folder, inputs, then the models.
    check_output(out_dir, args.overwrite)
    items = list_inputs(args.inputs, args.recursive, out_dir)
    corner_model = resolve_path(args.corner_model)
    refiner = resolve_path(args.refiner_model) if args.refiner_model else refiner_for(corner_model)
    if not args.refiner_model and not os.path.isfile(refiner):
        logger.warning("%s not found: each card keeps the detector's corners (only the frame's card is refined)",
                       refiner)
        refiner = None
    scanner = Scanner(resolve_path(args.seg_model), corner_model, args.threads, refiner)
    clear_output(out_dir)
    os.makedirs(out_dir, exist_ok=True)

    counts = Counter()
    jsonl = os.path.join(out_dir, JSONL)
    start = time.perf_counter()
    inputs = 0
    with open(jsonl, "w") as f, logging_redirect_tqdm(), \
            tqdm(total=count_frames(items, args.frame_step), unit="img", desc="scan", disable=args.quiet) as bar:
        for frame in iter_frames(items, args.frame_step, mode, args.workers):
            records = scan_frame(scanner, frame, args, out_dir)
            for record in records:
                f.write(json.dumps(record) + "\n")
                counts[record["status"]] += 1
            inputs += 1
            bar.update()
            if records[0]["status"] == "unreadable":
                logger.warning("%s: %s (skipped)", records[0]["source"], records[0]["error"])
    seconds = time.perf_counter() - start
    logger.info("%d inputs in %.1f s (%.2f images/s): %s -> %s", inputs, seconds, inputs / max(seconds, 1e-9),
                ", ".join(f"{counts[s]} {s}" for s in STATUSES), jsonl)
    if args.strict and counts["unreadable"]:
        raise ScriptError(f"{counts['unreadable']} of {inputs} inputs unreadable (--strict); see {jsonl}")
    return {"counts": dict(counts), "total": inputs, "seconds": seconds, "jsonl": jsonl}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Find the cards in photos, folders or a video; write each out flat, "
                                "with its corners in scans.jsonl", add_help=add_help)
    p.add_argument("inputs", nargs="+", help="image files, folders of images, or video files")
    p.add_argument("-o", "--output", required=True, help="output folder (refused when not empty, see --overwrite)")
    p.add_argument("-r", "--recursive", action="store_true", help="also the images in subfolders of a folder")
    p.add_argument("--frame-step", type=int, default=DEFAULT_FRAME_STEP, help="videos: every Nth frame (%(default)s)")
    p.add_argument("--central", action="store_true", help="one card per input, the web app's: the strong card "
                   "nearest the centre of the centred 3:4 crop")
    p.add_argument("--letterbox", action="store_true", help="one view, the whole image with black bars, instead of "
                   "tiles: faster, but small cards get fewer pixels")
    p.add_argument("--seg-model", default=DEFAULT_SEG_MODEL, help="segmentation ONNX (input 1x3x640x480, mask output)")
    p.add_argument("--corner-model", default=DEFAULT_CORNER_MODEL, help="corner ONNX (cards, card_scores, corners and "
                   "score outputs)")
    p.add_argument("--refiner-model", default=None, help="refiner ONNX that refines every card (default: "
                   "<corner model>_refiner.onnx next to it)")
    p.add_argument("--threads", type=int, default=0, help="onnxruntime threads per model (0: one per core)")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS, help="image decoding threads (%(default)s)")
    p.add_argument("--min-score", type=float, default=OK_SCORE,
                   help="below this corner score (%(default)s) a card is flagged low_score, as is one the mask "
                        "does not confirm")
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
