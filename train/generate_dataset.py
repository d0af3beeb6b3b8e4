"""Generate a synthetic card dataset in exactly the layout of the users' real dataset.

    python train/generate_dataset.py                       # -> dataset/ at the repository root
    python train/generate_dataset.py --num-train 4000 --num-test 500 --seed 0 --workers 8
    python train/generate_dataset.py --backgrounds ~/photos/tables --output data/cards

Layout written (see train/README.md):
    <output>/{train,test}/images/<stem>.jpg   480 x 640 RGB, JPEG q95
    <output>/{train,test}/masks/<stem>.png    0 / 255 single channel, 255 = card
    <output>/corner_annotations.json          {"train": {"<stem>.jpg": [[x, y] x 4]}, "test": {...}}
Negatives (no card) have a black mask and no entry in the JSON, like the real dataset.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import multiprocessing as mp
import os
import shutil
import time

import cv2
import numpy as np
from tqdm import tqdm

from common import (
    CORNERS_FILE,
    DEFAULT_DATASET,
    IMAGE_EXT,
    MASK_EXT,
    VISIBILITY_FILE,
    DataError,
    atomic_write_bytes,
    resolve_path,
    run_script,
)
from synthetic import scenes
from synthetic.photos import PHOTO_EXTS, PhotoPool, open_pool

logger = logging.getLogger(__name__)

BACKGROUND_EXTS = PHOTO_EXTS   # v1 --backgrounds takes the same files as --photos (not recursively)


# Set in each worker (inherited through fork, or by the pool's initializer): the decoded --photos.
_PHOTOS: PhotoPool | None = None


def _init_worker(photos: PhotoPool | None) -> None:
    global _PHOTOS
    _PHOTOS = photos


def _rounded(corners: np.ndarray) -> list:
    return [[round(float(x), 2), round(float(y), 2)] for x, y in corners]


def _render_one(job: tuple) -> tuple[str, str, list | None, list | None]:
    """Render and write one sample; returns (split, file name, its corner_annotations.json entry or
    None, its corner_visibility.json entry). A single card's entry is one quad [[x, y] x 4], as the
    users' datasets have; a multi-card scene's is a list of quads, one per card."""
    out_dir, split, index, seed, preset, backgrounds, negative_fraction, multi_fraction = job
    frame = scenes.render_frame(seed, split, index, preset, backgrounds, _PHOTOS, negative_fraction, multi_fraction)
    prefix = "cards" if frame.multi else "negative" if frame.negative else "card"
    stem = f"{prefix}_{split}_{index:06d}"
    split_dir = os.path.join(out_dir, split)
    ok_img, jpg = cv2.imencode(IMAGE_EXT, cv2.cvtColor(frame.image, cv2.COLOR_RGB2BGR),
                               [cv2.IMWRITE_JPEG_QUALITY, 95])
    ok_mask, png = cv2.imencode(MASK_EXT, frame.mask)
    if not (ok_img and ok_mask):
        raise RuntimeError(f"could not encode sample {stem}")
    atomic_write_bytes(os.path.join(split_dir, "images", stem + IMAGE_EXT), jpg.tobytes(), fsync=False)
    atomic_write_bytes(os.path.join(split_dir, "masks", stem + MASK_EXT), png.tobytes(), fsync=False)
    if frame.multi:
        return split, stem + IMAGE_EXT, [_rounded(c) for c in frame.corners], [list(s) for s in frame.states]
    if frame.negative:
        return split, stem + IMAGE_EXT, None, None
    return split, stem + IMAGE_EXT, _rounded(frame.corners[0]), list(frame.states[0])


def list_backgrounds(folder: str | None) -> list[str]:
    if not folder:
        return []
    folder = resolve_path(folder)
    if not os.path.isdir(folder):
        raise DataError(f"--backgrounds: {folder} is not a folder")
    paths = sorted(os.path.join(folder, f) for f in os.listdir(folder) if f.lower().endswith(BACKGROUND_EXTS))
    if not paths:
        raise DataError(f"--backgrounds: no images ({', '.join(BACKGROUND_EXTS)}) in {folder}")
    return paths


def main(args: argparse.Namespace) -> dict:
    out_dir = resolve_path(args.output)
    candidates = [os.path.join(out_dir, CORNERS_FILE)] + [os.path.join(out_dir, s, "images") for s in scenes.SPLIT_IDS]
    existing = [d for d in candidates if os.path.isfile(d) or (os.path.isdir(d) and os.listdir(d))]
    if existing and not args.overwrite:
        # Never mix synthetic images into a user's dataset (or into a half-written earlier run).
        raise DataError(f"{out_dir} already holds data ({existing[0]}); pass --overwrite to replace it "
                        f"or choose another --output")
    if args.backgrounds and args.preset != "v1":
        raise DataError("--backgrounds is the v1 preset's option; with --preset v2 or hard use --photos (photos for "
                        "backgrounds and card art)")
    if args.photos and args.preset == "v1":
        raise DataError("--photos needs --preset v2 or hard (v1 takes --backgrounds)")
    for option, value in (("--negative-fraction", args.negative_fraction), ("--multi-card", args.multi_card)):
        if value is not None and not 0.0 <= value <= 1.0:
            raise DataError(f"{option} must be between 0 and 1, got {value}")
    backgrounds = list_backgrounds(args.backgrounds)
    photos = open_pool(args.photos)
    if photos is not None:
        logger.info("%d photos from %s", len(photos), ", ".join(photos.folders))
    if args.overwrite:   # stale files of a larger earlier dataset must not survive
        for name in (CORNERS_FILE, VISIBILITY_FILE, *scenes.SPLIT_IDS):
            path = os.path.join(out_dir, name)
            if os.path.isdir(path):
                shutil.rmtree(path)
            elif os.path.exists(path):
                os.remove(path)
    for split in scenes.SPLIT_IDS:
        for sub in ("images", "masks"):
            os.makedirs(os.path.join(out_dir, split, sub), exist_ok=True)
    jobs = [(out_dir, split, i, args.seed, args.preset, backgrounds, args.negative_fraction, args.multi_card)
            for split, n in (("train", args.num_train), ("test", args.num_test)) for i in range(n)]
    annotations: dict[str, dict] = {"train": {}, "test": {}}
    states: dict[str, dict] = {"train": {}, "test": {}}
    start = time.perf_counter()
    workers = max(1, args.workers)
    # One worker renders in this process: no fork (a process with live library threads can hang a
    # forked child) and no pool to start. Every scene's random stream depends on (seed, split,
    # index) only, so the output is the same either way.
    with contextlib.ExitStack() as stack:
        if workers == 1:
            _init_worker(photos)
            stack.callback(_init_worker, None)     # the photos are not kept past this call
            results = map(_render_one, jobs)
        else:
            pool = stack.enter_context(mp.get_context("fork" if os.name == "posix" else "spawn").Pool(
                workers, _init_worker, (photos,)))
            results = pool.imap(_render_one, jobs, chunksize=8)
        for split, name, corners, corner_states in tqdm(results, total=len(jobs), desc="generate", unit="img",
                                                        disable=args.quiet):
            if corners is not None:
                annotations[split][name] = corners
                states[split][name] = corner_states
    elapsed = time.perf_counter() - start
    # The corner states go to a side file (the users' JSON format stays as it is); the
    # annotations JSON is written last: its presence marks a complete dataset.
    for split in annotations:
        annotations[split] = dict(sorted(annotations[split].items()))
        states[split] = dict(sorted(states[split].items()))
    atomic_write_bytes(os.path.join(out_dir, VISIBILITY_FILE), json.dumps(
        {"states": {"0": "outside the frame", "1": "inside the frame, hidden", "2": "visible"}, **states},
        indent=1).encode())
    atomic_write_bytes(os.path.join(out_dir, CORNERS_FILE), json.dumps(annotations, indent=1).encode())
    rate = len(jobs) / elapsed if elapsed > 0 else float("inf")
    logger.info("wrote %d images to %s in %.1f s: %.1f images/s with %d workers (%.1f per worker)",
                len(jobs), out_dir, elapsed, rate, workers, rate / workers)
    return {"images": len(jobs), "seconds": elapsed, "images_per_s": rate, "workers": workers}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Generate a synthetic trading-card dataset", add_help=add_help)
    p.add_argument("--output", default=DEFAULT_DATASET, help="dataset folder (default: dataset/ at the repo root)")
    p.add_argument("--num-train", type=int, default=3000, help="training images")
    p.add_argument("--num-test", type=int, default=300, help="test images")
    p.add_argument("--seed", type=int, default=0, help="same seed, same dataset (whatever --workers)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1, help="processes")
    p.add_argument("--preset", default="v2", choices=scenes.PRESETS,
                   help="v2: hands, photos, room structure (default); hard: an evaluation split concentrating "
                        "corner fingers, structured backgrounds, dark borders and out-of-frame cards; v1: the first "
                        "generator's look, image for image")
    p.add_argument("--photos", nargs="+", default=None, metavar="DIR", help="folders of photos (searched "
                   "recursively) for backgrounds and card art (v2 / hard)")
    p.add_argument("--backgrounds", default=None, help="v1 only: folder of your own background photos (used for "
                   "~half)")
    presets_share = ", ".join(f"{k} {scenes.default_negative_fraction(k):g}" for k in scenes.PRESETS)
    p.add_argument("--negative-fraction", type=float, default=None, metavar="F",
                   help=f"share of card-free frames, 0..1 (default: the preset's: {presets_share}); e.g. 1 for a "
                        "set of card-free frames that teaches a detector what is not a card")
    multi_share = ", ".join(f"{k} {scenes.default_multi_fraction(k):g}" for k in scenes.PRESETS)
    p.add_argument("--multi-card", type=float, default=None, metavar="F",
                   help=f"share of card frames showing several cards (rows, grids, fans, piles, binder pages, "
                        f"sleeves), 0..1 (default: the preset's: {multi_share}); 0 gives exactly the single-card "
                        "frames of the same seed, 1 a multi-card set")
    p.add_argument("--overwrite", action="store_true", help="replace an existing dataset in --output")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    return p


if __name__ == "__main__":
    run_script(main, get_args_parser)
