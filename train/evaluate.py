"""Evaluate a checkpoint (.pt) or an exported model (.onnx) on a split of the dataset.

    python train/evaluate.py train/runs/segmentation/best.pt
    python train/evaluate.py train/exported_models/card_segmentation.onnx --overlays 8
    python train/evaluate.py model.onnx --data-path /data/cards --split test --json metrics.json

Card IoU, Dice and pixel accuracy over the whole split (one confusion matrix), at the model's
480x640 input, card where the probability is >= 0.5. Writes JSON (default: next to the model)
with the images that cost the most, and with --overlays N those N images drawn.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

from common import DEFAULT_DATASET, DataError, resolve_path, run_script
from segmentation.evaluation import evaluate_model

logger = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> dict:
    model_path = resolve_path(args.model)
    if args.overlays < 0:
        raise DataError(f"--overlays must be 0 or more, got {args.overlays}")
    if not os.path.isfile(model_path):
        raise DataError(f"{model_path}: model file not found")
    base = os.path.splitext(model_path)[0]
    result = evaluate_model(model_path, resolve_path(args.data_path), args.split, args.limit, args.overlays,
                            resolve_path(args.overlay_dir) if args.overlay_dir else base + "_overlays",
                            args.device, args.quiet)
    out = resolve_path(args.json) if args.json else base + f"_{args.split}_metrics.json"
    with open(out, "w") as f:
        json.dump(result, f, indent=1)
    print(f"{result['split']}: {result['images']} images  IoU {result['iou']:.4f}  Dice {result['dice']:.4f}  "
          f"pixel acc {result['pixel_acc']:.4f}  (lowest image IoU {result['min_image_iou']:.3f}: "
          f"{result['worst_image']})  -> {out}")
    return result


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Evaluate a segmentation checkpoint or ONNX model", add_help=add_help)
    p.add_argument("model", help=".pt checkpoint (train.py / prune.py) or .onnx export")
    p.add_argument("--data-path", default=DEFAULT_DATASET)
    p.add_argument("--split", default="test")
    p.add_argument("--limit", type=int, default=0, help="first N images only (0 = all)")
    p.add_argument("--json", default=None, help="output JSON (default: <model>_<split>_metrics.json)")
    p.add_argument("--overlays", type=int, default=0,
                   help="draw the N worst images (most wrong pixels) with prediction and truth")
    p.add_argument("--overlay-dir", default=None, help="default: <model>_overlays/")
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    return p


if __name__ == "__main__":
    run_script(main, get_args_parser)
