"""Write augmented training examples with the corners drawn and numbered, to check by eye that
the keypoints follow the pixels (corners/augment.py).

    python train/preview_corner_augmentations.py                       # 10 examples -> train/runs/corner_aug_preview
    python train/preview_corner_augmentations.py --num 20 --seed 3 --output-dir runs/preview

One JPEG per example plus grid.jpg. Corners: 1 = top-left, 2 = top-right, 3 = bottom-right,
4 = bottom-left; green = inside the frame (visibility 2), red ring on the border = pushed out of
the frame (visibility 0, drawn where it was clipped to).
"""

from __future__ import annotations

import argparse
import logging
import os

import cv2
import numpy as np

from common import DEFAULT_DATASET, DEFAULT_RUNS_DIR, DataError, resolve_path, run_script
from corners.augment import augment, get_corner_transforms
from corners.data import corner_samples, in_frame
from corners.predict import load_checked

logger = logging.getLogger(__name__)


def draw_corners(image: np.ndarray, corners: np.ndarray) -> np.ndarray:
    """RGB image with each card's 4 corners ((N, 4, 2) or (4, 2)) numbered; out-of-frame ones clipped
    to the border in red."""
    out = image.copy()
    for card in np.asarray(corners).reshape(-1, 4, 2):
        _draw_card(out, card)
    return out


def _draw_card(out: np.ndarray, corners: np.ndarray) -> None:
    h, w = out.shape[:2]
    vis = in_frame(corners, w, h)
    clipped = np.stack([np.clip(corners[:, 0], 0, w - 1), np.clip(corners[:, 1], 0, h - 1)], 1)
    cv2.polylines(out, [np.round(clipped).astype(np.int32)], True, (255, 255, 0), 1, cv2.LINE_AA)
    for k, ((x, y), v) in enumerate(zip(clipped, vis)):
        p = (int(round(x)), int(round(y)))
        if v:
            cv2.circle(out, p, 4, (0, 255, 0), -1, cv2.LINE_AA)
        else:
            cv2.circle(out, p, 7, (255, 0, 0), 2, cv2.LINE_AA)
        cv2.putText(out, str(k + 1), (p[0] + 6, p[1] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(out, str(k + 1), (p[0] + 6, p[1] - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.7, (255, 255, 255), 1,
                    cv2.LINE_AA)


def main(args: argparse.Namespace) -> list[str]:
    samples = [s for s in corner_samples(resolve_path(args.data_path), args.split) if len(s[1])]
    if not samples:
        raise DataError(f"{args.data_path}: no {args.split} image with annotated corners")
    out_dir = resolve_path(args.output_dir)
    os.makedirs(out_dir, exist_ok=True)
    rng = np.random.default_rng(args.seed)
    transform = get_corner_transforms(args.strength)
    transform.set_random_seed(args.seed)   # the same seed shows the same examples
    paths, tiles = [], []
    for i in range(args.num):
        path, corners = samples[int(rng.integers(len(samples)))]
        image, moved, _ = augment(transform, load_checked(path), corners)
        tile = draw_corners(image, moved)
        out = os.path.join(out_dir, f"example_{i:02d}.jpg")
        cv2.imwrite(out, cv2.cvtColor(tile, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
        paths.append(out)
        tiles.append(cv2.resize(tile, (tile.shape[1] // 2, tile.shape[0] // 2), interpolation=cv2.INTER_AREA))
    cols = 5
    blank = np.zeros_like(tiles[0])
    rows = [np.hstack(tiles[r:r + cols] + [blank] * (cols - len(tiles[r:r + cols])))
            for r in range(0, len(tiles), cols)]
    grid = os.path.join(out_dir, "grid.jpg")
    cv2.imwrite(grid, cv2.cvtColor(np.vstack(rows), cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 90])
    logger.info("%d examples and grid.jpg -> %s", len(paths), out_dir)
    return paths


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Preview the corner model's augmentations", add_help=add_help)
    p.add_argument("--data-path", default=DEFAULT_DATASET)
    p.add_argument("--split", default="train")
    p.add_argument("--num", type=int, default=10)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--strength", type=float, default=1.0, help="as train_corners.py --aug-strength")
    p.add_argument("--output-dir", default=os.path.join(DEFAULT_RUNS_DIR, "corner_aug_preview"))
    return p


if __name__ == "__main__":
    run_script(main, get_args_parser)
