"""Combine datasets into one by linking their images: a mix of looks (generator presets, your own
photos) for fine-tuning, without copying a file.

    python train/mix_datasets.py data/mix v1=data/v1train:1000:100 v2=data/v2train:1000:100
    python train/mix_datasets.py data/mine_plus v2=data/v2train:2000 mine=dataset

Each source is NAME=DIR[:N_TRAIN[:N_TEST]]: the first N images (by name) of its train and test
splits (an error if it has fewer), all of them without a count, none with 0 (the split need not
exist: a folder of card-free training frames joins as neg=DIR:1200:0). Every image and its mask
are linked into OUTPUT/<split>/ under `NAME_<file>`, and corner_annotations.json (and the
generator's corner_visibility.json, where a source has one) get their entries under the same
names, so the mix is a dataset in the usual layout for train.py, train_corner_refiner.py and
train_corners.py. A source without corner_annotations.json contributes masks only (its images are
then backgrounds for the corner scripts: leave it out of a corner mix). Every source is checked
before the first link. The output folder must not exist or be empty.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

from common import CORNERS_FILE, SPLITS, VISIBILITY_FILE, DataError, atomic_write_bytes, resolve_path, run_script
from segmentation.dataset import find_samples

logger = logging.getLogger(__name__)


def parse_source(value: str) -> tuple[str, str, list[int | None]]:
    """NAME=DIR[:N_TRAIN[:N_TEST]] -> (NAME, real DIR, [n_train, n_test]) with None for "all"."""
    name, sep, rest = value.partition("=")
    parts = rest.split(":")
    if not sep or not name or not parts[0] or len(parts) > 3 or not name.replace("-", "").replace("_", "").isalnum():
        raise DataError(f"{value!r}: expected NAME=DIR[:N_TRAIN[:N_TEST]] with a plain NAME")
    try:
        counts = [int(n) if n else None for n in parts[1:]] + [None] * (3 - len(parts))
    except ValueError:
        raise DataError(f"{value!r}: the counts must be whole numbers") from None
    path = resolve_path(parts[0])
    if not os.path.isdir(path):
        raise DataError(f"{name}: {path} is not a folder")
    return name, path, counts


def _load_json(path: str) -> dict:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno})") from None


def main(args: argparse.Namespace) -> dict:
    out = resolve_path(args.output)
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise DataError(f"{out} exists and is not an empty folder")
    sources = [parse_source(v) for v in args.sources]
    names = [n for n, _, _ in sources]
    if len(set(names)) != len(names):
        raise DataError(f"source names must differ: {names}")
    legend = None
    # Every source is read and checked before the first link: a bad one leaves no half-made mix
    # behind (which the next run would refuse as a folder that is not empty).
    chosen, links = [], {}
    for name, path, limits in sources:
        ann = _load_json(os.path.join(path, CORNERS_FILE)) if os.path.isfile(os.path.join(path, CORNERS_FILE)) else {}
        vis_path = os.path.join(path, VISIBILITY_FILE)
        vis = _load_json(vis_path) if os.path.isfile(vis_path) else {}
        for split, limit in zip(SPLITS, limits):
            # A count of 0 takes nothing: the source need not have that split at all.
            if limit == 0:
                pairs = []
            else:
                images = os.path.join(path, split, "images")
                if not os.path.isdir(images) or not os.listdir(images):
                    skip = f"{name}=DIR:N:0" if split == "test" else f"{name}=DIR:0:N"
                    raise DataError(f"{name}: {images} is missing or empty; a count of 0 leaves the {split} "
                                    f"split out ({skip})")
                pairs = find_samples(path, split)
                if limit is not None and len(pairs) < limit:
                    raise DataError(f"{name}: asks for {limit} {split} images but {path} has {len(pairs)}")
                pairs = pairs[:limit]
            for image, mask in pairs:
                for src, sub in ((image, "images"), (mask, "masks")):
                    link = os.path.join(split, sub, f"{name}_{os.path.basename(src)}")
                    if link in links:
                        raise DataError(f"{name}: {src} and {links[link]} would both be linked as {link}; "
                                        "rename a source")
                    links[link] = src
            chosen.append((name, split, pairs, ann.get(split, {}), vis.get(split, {})))
        legend = legend or vis.get("states")
    corners = {s: {} for s in SPLITS}
    states = {s: {} for s in SPLITS}
    counts = {}
    for name, split, pairs, ann, vis in chosen:
        for sub in ("images", "masks"):
            os.makedirs(os.path.join(out, split, sub), exist_ok=True)
        for image, mask in pairs:
            for src, sub in ((image, "images"), (mask, "masks")):
                os.symlink(src, os.path.join(out, split, sub, f"{name}_{os.path.basename(src)}"))
            key = os.path.basename(image)
            if key in ann:
                corners[split][f"{name}_{key}"] = ann[key]
            if key in vis:
                states[split][f"{name}_{key}"] = vis[key]
        counts[f"{name}/{split}"] = len(pairs)
    atomic_write_bytes(os.path.join(out, CORNERS_FILE), json.dumps(corners).encode(), fsync=False)
    if any(states.values()):
        atomic_write_bytes(os.path.join(out, VISIBILITY_FILE),
                           json.dumps({"states": legend, **states}).encode(), fsync=False)
    logger.info("%s: %s", out, ", ".join(f"{k} {v}" for k, v in counts.items()))
    return {"output": out, "counts": counts}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Link datasets into one mixed dataset", add_help=add_help)
    p.add_argument("output", help="the mixed dataset's folder (new or empty)")
    p.add_argument("sources", nargs="+", metavar="NAME=DIR[:N_TRAIN[:N_TEST]]")
    return p


if __name__ == "__main__":
    run_script(main, get_args_parser)
