"""A preview sheet of generated scenes (PNG grid), to judge the generator's realism at a glance.

    python train/preview_dataset.py --preset v2 --output runs/preview_v2.png
    python train/preview_dataset.py --preset hard --photos /usr/share/backgrounds --count 24 --annotate

Renders the same scenes generate_dataset.py would write for --seed (train split, images 0..count-1),
without writing a dataset. With --annotate: the mask's outline in green and each true corner as a
dot: green visible, orange hidden under a finger (corners outside the frame are not drawn).
"""

from __future__ import annotations

import argparse
import logging
import os

import cv2
import numpy as np

from common import DEFAULT_RUNS_DIR, SPLITS, DataError, atomic_write_bytes, resolve_path, run_script
from generate_dataset import SPLIT_IDS, render
from photos import open_pool
from synthetic import HIDDEN, VISIBLE

logger = logging.getLogger(__name__)

STATE_COLOURS = {VISIBLE: (0, 220, 0), HIDDEN: (255, 140, 0)}   # RGB


def annotate(image: np.ndarray, mask: np.ndarray, corners: np.ndarray | None, states: list[int] | None
             ) -> np.ndarray:
    out = image.copy()
    contours, _ = cv2.findContours((mask > 127).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (0, 255, 0), 1)
    if corners is not None:
        for (x, y), s in zip(corners, states):
            if s in STATE_COLOURS:
                cv2.circle(out, (int(round(x)), int(round(y))), 6, STATE_COLOURS[s], 2, cv2.LINE_AA)
    return out


def main(args: argparse.Namespace) -> str:
    if args.columns < 1 or args.count < 1:
        raise DataError("--count and --columns must be at least 1")
    photos = open_pool(args.photos)
    tiles = []
    for i in range(args.count):
        rng = np.random.default_rng([args.seed, SPLIT_IDS[args.split], i])
        scene, _ = render(rng, args.preset, [], photos)
        tile = annotate(scene.image, scene.mask, scene.corners, scene.states) if args.annotate else scene.image
        tiles.append(cv2.resize(tile, None, fx=args.scale, fy=args.scale, interpolation=cv2.INTER_AREA))
    rows = -(-len(tiles) // args.columns)
    tiles += [np.zeros_like(tiles[0])] * (rows * args.columns - len(tiles))
    sheet = np.vstack([np.hstack(tiles[r * args.columns:(r + 1) * args.columns]) for r in range(rows)])
    out = resolve_path(args.output or os.path.join(DEFAULT_RUNS_DIR, f"preview_{args.preset}.png"))
    ok, png = cv2.imencode(".png", cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))
    if not ok:
        raise DataError(f"{out}: could not encode the preview sheet")
    atomic_write_bytes(out, png.tobytes())
    logger.info("wrote %d scenes (%s preset) to %s", args.count, args.preset, out)
    return out


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Preview sheet of generated scenes", add_help=add_help)
    p.add_argument("--preset", default="v2", choices=["v1", "v2", "hard"])
    p.add_argument("--photos", nargs="+", default=None, metavar="DIR", help="photo folders, as generate_dataset.py")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train", choices=SPLITS)
    p.add_argument("--count", type=int, default=24)
    p.add_argument("--columns", type=int, default=6)
    p.add_argument("--scale", type=float, default=0.5, help="tile size relative to 480x640")
    p.add_argument("--annotate", action="store_true", help="draw the mask outline and the corner states")
    p.add_argument("--output", default=None, help="PNG path (default: train/runs/preview_<preset>.png)")
    return p


if __name__ == "__main__":
    run_script(main, get_args_parser)
