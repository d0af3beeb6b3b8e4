"""Corner annotations -> an Ultralytics pose dataset in a cache folder.

The user's dataset is never written to. The cache holds symbolic links to the images (Ultralytics
finds labels by replacing /images/ with /labels/ in the image path, so the links are what lets
the labels live elsewhere) and one label file per image, one line per card:

    0 cx cy w h  x1 y1 v1  x2 y2 v2  x3 y3 v3  x4 y4 v4      (all normalised to 0..1)

An image's entry in corner_annotations.json is one card's 4 points, or a list of quads (one per
card, [] for none); corner_visibility.json (the generator's) follows the same shape.

Coordinates: the annotations use the pixel-centre convention (the centre of the top-left pixel is
(0, 0), as cv2.warpPerspective), Ultralytics the continuous one (the image spans 0..W), so
x_continuous = x + 0.5. Corners are TL, TR, BR, BL: clockwise from the smallest x + y.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile

import numpy as np

from common import (
    CORNERS_FILE,
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    REPO_ROOT,
    SPLITS,
    VISIBILITY_FILE,
    DataError,
    corner_order,
    order_corners,
)
from segmentation.dataset import GENERATE_HINT, IMAGE_EXTS

logger = logging.getLogger(__name__)

NUM_CORNERS = 4
KPT_SHAPE = [NUM_CORNERS, 3]          # (x, y, visibility) per corner
FLIP_IDX = [1, 0, 3, 2]               # a horizontal mirror swaps TL<->TR and BR<->BL
CORNER_NAMES = ["top_left", "top_right", "bottom_right", "bottom_left"]
CLASS_NAMES = {0: "card"}
DEFAULT_CACHE_DIR = os.path.join(REPO_ROOT, ".cache", "corner_datasets")

# OKS = exp(-d^2 / (8 sigma^2 A)) with A = 0.53 x box area (Ultralytics' pose metric). For a
# typical card box (260 x 360 px, sqrt(A) = 223 px) sigma 0.02 puts OKS 0.5 at 10.5 px and OKS 0.95
# at 2.9 px, so pose mAP50-95 sweeps the 3..10 px band we care about. Ultralytics' default for
# 4 keypoints (1/K = 0.25) calls a 130 px error OKS 0.5: a match for almost any guess.
METRIC_OKS_SIGMA = 0.02
# The loss keeps the default width on purpose: with sigma 0.02 a corner 100 px off (every corner
# at initialisation) has exp(-e) ~ 0 and no gradient. The trainer sets it on the model.
LOSS_OKS_SIGMA = 1.0 / NUM_CORNERS
# Weight of the L1 corner term the trainer adds to that loss (corners/loss.py says why); 0 = off.
KPT_L1_GAIN = 1.0


def canonical_order(corners: np.ndarray) -> np.ndarray:
    """(4, 2) in any order -> TL, TR, BR, BL: clockwise on screen from the smallest x + y."""
    return order_corners(np.asarray(corners, np.float64))


def canonical_permutation(corners: np.ndarray) -> np.ndarray:
    """(4,) indices of canonical_order, to carry per-corner data (visibility) along."""
    return corner_order(np.asarray(corners, np.float64))


def in_frame(xy: np.ndarray, width: int = IMAGE_WIDTH, height: int = IMAGE_HEIGHT) -> np.ndarray:
    """(..., 2) pixel-centre coordinates -> bool: inside the image (continuous 0..W, 0..H)."""
    x, y = xy[..., 0] + 0.5, xy[..., 1] + 0.5
    return (x >= 0) & (x <= width) & (y >= 0) & (y <= height)


def parse_entry(value, where: str) -> np.ndarray:
    """One image's corner_annotations.json value -> (N, 4, 2) float64: one quad [[x, y] x 4] is one
    card (the users' format), a list of quads is one card each, an empty list is no card."""
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{where}: expected 4 [x, y] points (one card) or a list of them (one per card), got "
                        f"{json.dumps(value)[:80]}") from None
    if arr.shape == (NUM_CORNERS, 2):
        arr = arr[None]
    elif arr.size == 0 and arr.ndim == 1:
        arr = np.zeros((0, NUM_CORNERS, 2))
    if arr.ndim != 3 or arr.shape[1:] != (NUM_CORNERS, 2):
        raise DataError(f"{where}: expected 4 [x, y] points (one card) or a list of them (one per card), got shape "
                        f"{list(arr.shape)} ({json.dumps(value)[:80]})")
    if not np.isfinite(arr).all():
        raise DataError(f"{where}: corner coordinates must be finite numbers")
    return arr


def load_corner_annotations(path: str) -> dict[str, dict[str, np.ndarray]]:
    """corner_annotations.json -> {split: {image name: (N, 4, 2) float64}}, every entry checked.

    An entry is one card's 4 points or a list of such quads (several cards; [] for none). Errors
    name the file and the key: a malformed JSON, a split that is not an object, an entry of another shape.
    """
    if not os.path.isfile(path):
        raise DataError(f"{path} does not exist: the corner model needs {CORNERS_FILE} next to train/ and test/; "
                        f"{GENERATE_HINT}")
    try:
        with open(path, encoding="utf-8") as f:
            raw = json.load(f)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}: not valid JSON ({e.msg} at line {e.lineno}, column {e.colno})") from None
    if not isinstance(raw, dict):
        raise DataError(f"{path}: expected an object {{\"train\": {{...}}, \"test\": {{...}}}}, "
                        f"got {type(raw).__name__}")
    out = {}
    for split in SPLITS:
        entries = raw.get(split, {})
        if not isinstance(entries, dict):
            raise DataError(f"{path}: \"{split}\" must map image names to their cards' corners, "
                            f"got {type(entries).__name__}")
        out[split] = {name: parse_entry(pts, f"{path}: \"{split}\" -> \"{name}\"") for name, pts in entries.items()}
    unknown = sorted(set(raw) - set(SPLITS))
    if unknown:
        logger.warning("%s: ignoring unknown top-level keys %s (expected %s)", path, unknown, list(SPLITS))
    return out


def list_images(root: str, split: str) -> list[str]:
    """Image file names of one split, sorted."""
    img_dir = os.path.join(root, split, "images")
    if not os.path.isdir(img_dir):
        raise DataError(f"{img_dir} does not exist: expected {root}/{split}/images; {GENERATE_HINT}")
    names = sorted(f for f in os.listdir(img_dir) if f.lower().endswith(IMAGE_EXTS) and not f.startswith("."))
    if not names:
        raise DataError(f"split '{split}' is empty: no {'/'.join(IMAGE_EXTS)} images in {img_dir}")
    return names


def corner_samples(root: str, split: str, annotations: dict | None = None) -> list[tuple[str, np.ndarray]]:
    """[(image path, (N, 4, 2) each card's corners in TL, TR, BR, BL order)] of one split; N = 0 for
    an image without a card.

    Every annotated name must exist as an image of that split; images without an entry have no card.
    """
    if annotations is None:
        annotations = load_corner_annotations(os.path.join(root, CORNERS_FILE))
    names = list_images(root, split)
    entries = annotations[split]
    missing = sorted(set(entries) - set(names))
    if missing:
        raise DataError(f"{os.path.join(root, CORNERS_FILE)}: \"{split}\" -> \"{missing[0]}\" has no image "
                        f"{os.path.join(root, split, 'images', missing[0])}"
                        + (f" (and {len(missing) - 1} more entries)" if len(missing) > 1 else ""))
    img_dir = os.path.join(root, split, "images")
    empty = np.zeros((0, NUM_CORNERS, 2))
    return [(os.path.join(img_dir, n), np.stack([canonical_order(c) for c in entries[n]]) if len(entries.get(n, empty))
             else empty) for n in names]


def card_samples(samples: list[tuple[str, np.ndarray]]) -> list[tuple[str, int, np.ndarray]]:
    """corner_samples' images -> one (image path, card index, (4, 2) corners) per card."""
    return [(p, k, c) for p, cards in samples for k, c in enumerate(cards)]


HIDDEN_STATE = 1   # corner_visibility.json: 0 outside the frame, 1 inside but hidden, 2 visible


def corner_states(root: str, split: str, samples: list[tuple[str, np.ndarray]]) -> list[np.ndarray] | None:
    """Per sample of corner_samples(root, split), (N, 4) int corner states from the generator's
    corner_visibility.json, in the canonical corner order; -1 for a card without an entry. None when
    the dataset has no such file (users' data: the states are the generator's)."""
    path = os.path.join(root, VISIBILITY_FILE)
    if not os.path.isfile(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            entries = json.load(f)[split]
        raw = load_corner_annotations(os.path.join(root, CORNERS_FILE))[split]
        out = []
        for p, cards in samples:
            name = os.path.basename(p)
            states = np.full((len(cards), NUM_CORNERS), -1, np.int64)
            if len(cards) and name in entries and name in raw:
                given = np.asarray(entries[name], np.int64).reshape(-1, NUM_CORNERS)
                if len(given) != len(raw[name]):
                    raise ValueError(f"{name}: {len(given)} cards' states for {len(raw[name])} cards")
                for k, (st, c) in enumerate(zip(given, raw[name])):
                    states[k] = st[canonical_permutation(c)]
            out.append(states)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, IndexError) as e:
        raise DataError(f"{path}: not a corner_visibility.json with 4 states per card of each {split} image "
                        f"({type(e).__name__}: {e})") from None
    return out


def label_line(corners: np.ndarray, width: int = IMAGE_WIDTH, height: int = IMAGE_HEIGHT) -> str | None:
    """(4, 2) pixel-centre corners -> one Ultralytics pose label line, or None if no box remains.

    Corners outside the image are clipped onto its border with visibility 0 (Ultralytics drops
    whole labels with values outside 0..1); the box is the clipped corners' bounding box.
    """
    xy = corners + 0.5                               # continuous coordinates
    visible = in_frame(corners, width, height)
    clipped = np.stack([np.clip(xy[:, 0], 0, width), np.clip(xy[:, 1], 0, height)], 1)
    x0, y0 = clipped.min(0)
    x1, y1 = clipped.max(0)
    if x1 - x0 < 1 or y1 - y0 < 1:
        return None
    vals = [(x0 + x1) / 2 / width, (y0 + y1) / 2 / height, (x1 - x0) / width, (y1 - y0) / height]
    for (x, y), v in zip(clipped, visible):
        vals += [x / width, y / height, 2.0 if v else 0.0]
    return "0 " + " ".join(f"{v:.6f}" for v in vals)


def _link(src: str, dst: str) -> None:
    try:
        os.symlink(src, dst)
    except OSError:          # e.g. Windows without developer mode: a hard link still copies nothing
        try:
            os.link(src, dst)
        except OSError as e:
            raise DataError(f"cannot link {src} into the cache {os.path.dirname(dst)} ({e}); pass --cache-dir on "
                            f"the same filesystem as the dataset") from None


def build_pose_dataset(root: str, cache_dir: str = DEFAULT_CACHE_DIR) -> str:
    """Writes the Ultralytics pose dataset for `root` under cache_dir and returns its data.yaml.

    The folder is named by a hash of the dataset path, the annotation file and the image lists, so
    an edited JSON or an added image gets a new folder (a stale label can never be read), while a
    second run or a --resume on the same data reuses the folder instead of deleting it under a
    running job. It is built in a temporary folder and renamed into place when complete.
    """
    root = os.path.realpath(root)
    ann_path = os.path.join(root, CORNERS_FILE)
    annotations = load_corner_annotations(ann_path)
    samples = {split: corner_samples(root, split, annotations) for split in SPLITS}
    h = hashlib.sha1(root.encode())
    with open(ann_path, "rb") as f:
        h.update(f.read())
    for split in SPLITS:
        h.update("\n".join(os.path.basename(p) for p, _ in samples[split]).encode())
    cache_dir = os.path.realpath(cache_dir)
    out = os.path.join(cache_dir, f"{os.path.basename(root)}-{h.hexdigest()[:12]}")
    yaml_path = os.path.join(out, "data.yaml")
    if os.path.isfile(yaml_path):
        return yaml_path

    val_corners = sum(int(in_frame(c).sum()) for _, c in samples["test"])
    if not val_corners:
        raise DataError(f"{ann_path}: the \"test\" split has no annotated card corner inside the frame; it is the "
                        f"validation split of the corner model, which needs some to measure corner error")
    os.makedirs(cache_dir, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=cache_dir, prefix=f".building-{os.path.basename(out)}-")
    try:
        for split in SPLITS:
            img_out, lbl_out = os.path.join(tmp, "images", split), os.path.join(tmp, "labels", split)
            os.makedirs(img_out)
            os.makedirs(lbl_out)
            n_neg = n_hidden = 0
            n_cards = 0
            for path, cards in samples[split]:
                name = os.path.basename(path)
                _link(path, os.path.join(img_out, name))
                lines = []
                for corners in cards:
                    line = label_line(corners)
                    if line is None:
                        logger.warning("%s: a card's corners leave no box inside the image; trained as background",
                                       path)
                    else:
                        lines.append(line)
                n_neg += not lines
                n_cards += len(lines)
                n_hidden += int((~in_frame(cards)).sum())
                with open(os.path.join(lbl_out, os.path.splitext(name)[0] + ".txt"), "w") as f:
                    f.write("".join(line + "\n" for line in lines))
            logger.info("%s: %d images, %d cards, %d images without a card, %d corners outside the frame", split,
                        len(samples[split]), n_cards, n_neg, n_hidden)
        yaml_text = "\n".join([
            f"# Generated by train/corners/data.py from {root}; do not edit (a changed dataset gets a new folder).",
            f"path: {out}",
            "train: images/train",
            "val: images/test",
            f"names: {json.dumps(CLASS_NAMES)}",
            f"kpt_shape: {KPT_SHAPE}",
            f"flip_idx: {FLIP_IDX}",
            f"kpt_oks_sigmas: {[METRIC_OKS_SIGMA] * NUM_CORNERS}",
            f"kpt_names: {json.dumps({0: CORNER_NAMES})}",
            ""])
        with open(os.path.join(tmp, "data.yaml"), "w") as f:
            f.write(yaml_text)
        try:
            os.rename(tmp, out)
        except OSError:
            if not os.path.isfile(yaml_path):    # not a concurrent build of the same data that won
                raise
    finally:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
    return yaml_path


def box_from_corners(corners: np.ndarray, width: int = IMAGE_WIDTH, height: int = IMAGE_HEIGHT) -> np.ndarray | None:
    """(4, 2) pixel-centre corners -> normalised xywh box of the clipped corners, or None (used by
    the dataset after augmentation, with the same rule as the label files)."""
    line = label_line(corners, width, height)
    return None if line is None else np.array(line.split()[1:5], np.float32)
