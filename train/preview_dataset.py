"""A preview sheet of generated scenes (PNG grid), to judge the generator's realism at a glance.

    python train/preview_dataset.py --preset v2 --output runs/preview_v2.png
    python train/preview_dataset.py --preset hard --photos /usr/share/backgrounds --count 24 --annotate

Renders the same scenes generate_dataset.py would write for --seed (train split, images 0..count-1),
without writing a dataset. With --annotate: the mask's outline in green and each true corner as a
dot: green visible, orange hidden under a finger or another card (corners outside the frame are not
drawn), each card's outline in white.
"""

from __future__ import annotations

import argparse
import logging
import os

import cv2
import numpy as np

from common import DEFAULT_RUNS_DIR, SPLITS, DataError, atomic_write_bytes, resolve_path, run_script
from synthetic import scenes
from synthetic.photos import open_pool
from synthetic.v1 import HIDDEN, VISIBLE

logger = logging.getLogger(__name__)

STATE_COLOURS = {VISIBLE: (0, 220, 0), HIDDEN: (255, 140, 0)}   # RGB


def annotate(image: np.ndarray, mask: np.ndarray, corners: np.ndarray, states: list[list[int]]) -> np.ndarray:
    """The mask's outline in green, each card's outline in thin white and its corners as dots
    (green visible, orange hidden); corners (N, 4, 2), states (N, 4)."""
    out = image.copy()
    contours, _ = cv2.findContours((mask > 127).astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (0, 255, 0), 1)
    for quad, card_states in zip(corners, states):
        cv2.polylines(out, [np.round(quad).astype(np.int32)], True, (255, 255, 255), 1, cv2.LINE_AA)
        for (x, y), s in zip(quad, card_states):
            if s in STATE_COLOURS:
                cv2.circle(out, (int(round(x)), int(round(y))), 6, STATE_COLOURS[s], 2, cv2.LINE_AA)
    return out


def main(args: argparse.Namespace) -> str:
    if args.columns < 1 or args.count < 1:
        raise DataError("--count and --columns must be at least 1")
    photos = open_pool(args.photos)
    tiles = []
    for i in range(args.count):
        scene = scenes.render_frame(args.seed, args.split, i, args.preset, [], photos, multi_fraction=args.multi_card)
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
    p.add_argument("--preset", default="v2", choices=scenes.PRESETS)
    p.add_argument("--photos", nargs="+", default=None, metavar="DIR", help="photo folders, as generate_dataset.py")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--split", default="train", choices=SPLITS)
    p.add_argument("--multi-card", type=float, default=None, metavar="F",
                   help="share of card frames with several cards (default: the preset's, as generate_dataset.py)")
    p.add_argument("--count", type=int, default=24)
    p.add_argument("--columns", type=int, default=6)
    p.add_argument("--scale", type=float, default=0.5, help="tile size relative to 480x640")
    p.add_argument("--annotate", action="store_true", help="draw the mask outline and the corner states")
    p.add_argument("--output", default=None, help="PNG path (default: train/runs/preview_<preset>.png)")
    return p


if __name__ == "__main__":
    run_script(main, get_args_parser)
