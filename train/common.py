"""Shared constants, paths and small helpers for every script in train/.

One source for every default that more than one script needs: image size, normalisation,
where the dataset and the exported models live.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import tempfile
from typing import Any

import numpy as np

# Paths are resolved from this file, so scripts work from any working directory.
TRAIN_DIR = os.path.dirname(os.path.realpath(__file__))
REPO_ROOT = os.path.dirname(TRAIN_DIR)
DEFAULT_DATASET = os.path.join(REPO_ROOT, "dataset")
DEFAULT_RUNS_DIR = os.path.join(TRAIN_DIR, "runs")
EXPORT_DIR = os.path.join(TRAIN_DIR, "exported_models")
# DataLoader worker processes of the training scripts: every core, but no more than 8 (beyond that
# the loaders of these small models stop gaining and cost memory).
DEFAULT_LOADER_WORKERS = min(8, os.cpu_count() or 1)

# The model input is a portrait frame, 480 wide x 640 high (3:4), as in the users' dataset.
IMAGE_WIDTH = 480
IMAGE_HEIGHT = 640

# ImageNet statistics for the MobileNetV3 backbone, applied inside the model (see segmentation/model.py).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

# Card class index in the 2-class output (0 = background).
CARD_CLASS = 1

# The exported models' decision thresholds (train/exported_models/README.md), here so that torch-free
# scripts (scan.py) share them: a pixel is card where the segmentation probability is >= 0.5, and
# below a corner `score` of 0.25 there is no card (the detector's confidence threshold).
MASK_THRESHOLD = 0.5
NO_CARD_SCORE = 0.25
# A card scan.py reports `ok` scores at least this (and its mask agrees: scanning/agreement.py);
# between NO_CARD_SCORE and this it is flagged `low_score`.
OK_SCORE = 0.5
# The frame's card, when several are in view (card_corners.onnx's `corners`, the web app's card, scan.py
# --central): of the cards scoring at least this share of the best one, the nearest to the centre.
CENTRAL_MIN_SHARE = 0.5

# Checkpoint entries that belong to one run's optimizer and schedule. Averaged and calibrated
# checkpoints drop them (model.store_release): neither is a run to resume (train.py --resume
# refuses them; fine-tune from them with --weights), and a resumed run would relearn the
# calibrated bias.
RUN_STATE_KEYS = ("optimizer", "lr_scheduler", "scaler")

SPLITS = ("train", "test")
CORNERS_FILE = "corner_annotations.json"
# Written by the generator next to CORNERS_FILE: per image, each corner outside the frame (0),
# inside but hidden (1) or visible (2). Optional: real datasets do not have it.
VISIBILITY_FILE = "corner_visibility.json"
IMAGE_EXT = ".jpg"
MASK_EXT = ".png"


def corner_order(pts: np.ndarray) -> np.ndarray:
    """Indices that put (4, 2) points clockwise on screen (y down) by angle around the centroid,
    starting at the smallest x + y."""
    pts = np.asarray(pts, np.float64)
    c = pts.mean(0)
    idx = np.argsort(np.arctan2(pts[:, 1] - c[1], pts[:, 0] - c[0]))
    return np.roll(idx, -int(np.argmin(pts[idx].sum(1))))


def order_corners(pts: np.ndarray) -> np.ndarray:
    """The points in corner_order: TL, TR, BR, BL for an upright card."""
    pts = np.asarray(pts, np.float64)
    return pts[corner_order(pts)]


class ScriptError(Exception):
    """An expected failure of a script (bad input, a failed check): reported as one line, exit 1."""


class DataError(ScriptError):
    """Bad input (a file, a folder, an option): the message names it and the problem."""


def setup_logging(level: int = logging.INFO) -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s",
                        datefmt="%H:%M:%S")


def run_script(main, get_args_parser) -> None:
    """The `__main__` of every script: logging, arguments, and an expected failure (ScriptError:
    bad input, a failed gate) as one line on stderr and exit code 1 instead of a traceback."""
    setup_logging()
    try:
        main(get_args_parser().parse_args())
    except ScriptError as e:
        raise SystemExit(f"error: {script_error_message(e)}") from None


def script_error_message(e: ScriptError) -> str:
    """The error's own message, also when a DataLoader worker raised it: PyTorch re-raises it in the
    main process with the worker's whole traceback as the message, whose last line is ours."""
    text = str(e)
    if "Original Traceback" in text:
        last = text.rstrip().splitlines()[-1]
        text = last.split(": ", 1)[1] if last.startswith(type(e).__module__ + ".") else last
    return text


def select_device(device: str | None, cpu_note: str = "") -> str:
    """A torch device string: the one asked for, else CUDA when present, else the CPU with a warning.

    Asking for CUDA without a visible GPU is a DataError rather than a silent CPU run; asking for the
    CPU is taken as said, without a warning.
    """
    import torch

    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
        if device == "cpu":
            logging.getLogger(__name__).warning("no CUDA GPU: running on the CPU%s",
                                                f" ({cpu_note})" if cpu_note else "")
    if device != "cpu" and not torch.cuda.is_available():
        raise DataError(f"--device {device} asks for a CUDA GPU but none is visible; use --device cpu")
    return device


def public_path(path: str) -> str:
    """A path as the repository may record it (a model card, an export's JSON, a release checkpoint):
    relative to the repository root when inside it (data/unseen), else without the folders of the
    machine it was made on (a folder -> its name, a file -> its folder's name and its own); Debian's
    shared files (/usr/...) as they are."""
    if not isinstance(path, str) or not os.path.isabs(path) or path.startswith("/usr/"):
        return path
    real = os.path.realpath(path)
    for base in {REPO_ROOT, os.path.realpath(REPO_ROOT)}:
        if real == base or real.startswith(base + os.sep) or path.startswith(base + os.sep):
            return os.path.relpath(path if path.startswith(base + os.sep) else real, base)
    parts = [p for p in path.split(os.sep) if p]
    return os.path.join(*parts[-2:]) if len(parts) > 1 and os.path.splitext(parts[-1])[1] else parts[-1]


def public_command(command: str) -> str:
    """A command line with every absolute path in it made public_path (see there)."""
    return re.sub(r"(?<![\w./-])/[^\s'\"=]+", lambda m: public_path(m.group(0)), command)


def resolve_path(path: str) -> str:
    """User-given path -> absolute real path (relative to the current directory)."""
    return os.path.realpath(os.path.expanduser(path))


def resolve_recorded_path(path: str) -> str:
    """A path a checkpoint recorded (public_path: relative to the repository root) -> absolute real
    path: under the repository root when it is there, else relative to the current directory."""
    if not os.path.isabs(path) and os.path.exists(os.path.join(REPO_ROOT, path)):
        return os.path.realpath(os.path.join(REPO_ROOT, path))
    return resolve_path(path)


def atomic_write_bytes(path: str, data: bytes, fsync: bool = True) -> None:
    """Write a file so that a crash never leaves it half-written.

    fsync=False skips the flush to disk (still atomic against a killed process); the dataset
    generator uses it, since thousands of fsyncs cost more than the rendering.
    """
    directory = os.path.dirname(path) or "."
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            if fsync:
                f.flush()
                os.fsync(f.fileno())
        os.chmod(tmp, 0o644)   # mkstemp creates 0600; outputs are meant to be shared
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def atomic_torch_save(obj: Any, path: str) -> None:
    """torch.save through a temporary file + os.replace (a kill mid-write keeps the old file)."""
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def write_csv(path: str, fieldnames: list[str], rows: list[dict]) -> None:
    """A metrics CSV rewritten whole (from the history a checkpoint keeps), atomically."""
    import csv
    import io

    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=fieldnames, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def open_tensorboard(output_dir: str):
    """A SummaryWriter on <output_dir>/tensorboard, or None with a warning without tensorboard."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logging.getLogger(__name__).warning("tensorboard is not installed: no TensorBoard events (the CSV "
                                            "metrics are still written)")
        return None
    return SummaryWriter(os.path.join(output_dir, "tensorboard"))


def parse_named_path(value: str, option: str) -> tuple[str, str]:
    """NAME=DIR -> (NAME, real path of DIR), the folder checked."""
    name, sep, path = value.partition("=")
    if not sep or not name or not path:
        raise DataError(f"{option} {value!r}: expected NAME=DIR")
    path = resolve_path(path)
    if not os.path.isdir(path):
        raise DataError(f"{option} {name}: {path} is not a folder")
    return name, path


def add_comparison_args(p: argparse.ArgumentParser, model: str) -> None:
    """The export scripts' options for scoring further test splits and an earlier file of `model`
    in the same command (the model card's before / after tables)."""
    p.add_argument("--extra-eval", action="append", default=[], metavar="NAME=DIR",
                   help="also score DIR's test split under NAME in the model card (repeatable), e.g. hard=/data/hard")
    p.add_argument("--extra-eval-note", action="append", default=[], metavar="NAME=TEXT",
                   help="how that split was made (its command), for the model card")
    p.add_argument("--baseline", default=None, help=f"an earlier {model} .onnx scored on the same splits in the same "
                   "command (before / after in the model card)")


def comparison_args(args: argparse.Namespace) -> tuple[list[tuple[str, str]], str | None, dict[str, str]]:
    """add_comparison_args' options checked: [(NAME, folder)], the baseline file or None, {NAME: note}."""
    extra = [parse_named_path(v, "--extra-eval") for v in args.extra_eval]
    baseline = resolve_path(args.baseline) if args.baseline else None
    if baseline and not os.path.isfile(baseline):
        raise DataError(f"--baseline {baseline}: model file not found")
    return extra, baseline, dict(v.partition("=")[::2] for v in args.extra_eval_note)


# write_ranked's file names: a rank of two or more digits, then the image's stem.
RANKED_NAME = re.compile(r"\d{2,}_.+\.jpg")


def write_ranked(out_dir: str, images: list[tuple[str, Any]]) -> None:
    """(file name, (H, W, 3) uint8 RGB image) pairs, worst first, written as out_dir/01_<stem>.jpg,
    02_...: ranked names list the worst first in a file browser. Ranked files of an earlier run in
    the folder are removed first, so a re-run (another checkpoint, another split) does not leave its
    old ranks mixed in with the new ones."""
    import cv2

    os.makedirs(out_dir, exist_ok=True)
    for f in os.listdir(out_dir):
        if RANKED_NAME.fullmatch(f):
            os.remove(os.path.join(out_dir, f))
    width = max(2, len(str(len(images))))
    for rank, (name, rgb) in enumerate(images, 1):
        path = os.path.join(out_dir, f"{rank:0{width}d}_{os.path.splitext(name)[0]}.jpg")
        cv2.imwrite(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
