"""Move a segmentation checkpoint's card/background boundary to where its validation IoU peaks.

    python train/calibrate.py train/runs/segmentation/best.pt      # its run's validation split
    python train/calibrate.py best.pt --data-path DIR --split test --output calibrated.pt

Every user of the segmentation models (web app, scan.py, evaluate.py, the ONNX contract) calls a
pixel card where its probability is >= 0.5 (common.MASK_THRESHOLD). Training (cross-entropy + Dice,
train.py --dice-weight) does not put the pooled-IoU optimum there: our models' IoU peaks at a
probability of about 0.6-0.7 on every look of our splits (about 0.55 with cross-entropy only), and
about half of that bias is the soft Dice term's, which pays for recall along the card's outline (a
cross-entropy-only round needs half the offset; docs/experiments.md). Rather than a second
threshold to keep in step in Python and JavaScript, the offset goes into the model: adding `offset`
to the card logit's bias in the head's low_classifier (summed with the high branch before the
bilinear upsampling, whose weights sum to 1) moves every pixel's card-minus-background logit by
exactly `offset`. The 0.5 boundary then lies where the uncalibrated probability was
sigmoid(-offset), and the exported graph (a sigmoid of that upsampled difference) carries it with
no extra operator.

The offset is the one with the highest pooled card IoU (evaluate.py's metric) on the split, from
one pass over it: counts of card and background pixels per logit-difference bin, from which
every candidate offset's IoU is exact. By default the split is the one that chose the checkpoint
(its train.py --data-path and --val-split); never calibrate on a test split, and calibrate again
after any fine-tune (training learns the bias anew). The output keeps the training record but not
the optimizer state: fine-tune from it with train.py --weights; resume the run from its last.pt.
"""

from __future__ import annotations

import argparse
import logging
import math
import os

from common import (
    DEFAULT_DATASET,
    MASK_THRESHOLD,
    DataError,
    atomic_torch_save,
    public_path,
    resolve_path,
    resolve_recorded_path,
    run_script,
    select_device,
)
from segmentation.calibration import DEFAULT_MAX_OFFSET, DEFAULT_STEP, calibrate, card_head
from segmentation.dataset import find_samples
from segmentation.model import load_checkpoint_model, store_release

logger = logging.getLogger(__name__)


def main(args: argparse.Namespace) -> dict:
    path = resolve_path(args.checkpoint)
    if args.max_offset <= 0 or args.step <= 0 or args.step > args.max_offset:
        raise DataError(f"--max-offset ({args.max_offset}) and --step ({args.step}) must be positive, "
                        "the step no larger than the limit")
    model, ckpt = load_checkpoint_model(path)
    card_head(model)   # fail before the pass over the data
    # Default: the split that chose the checkpoint (train.py's --data-path / --val-split).
    trained = ckpt.get("args") or {}
    if args.data_path:
        data_path = resolve_path(args.data_path)
    elif trained.get("data_path"):
        data_path = resolve_recorded_path(trained["data_path"])
        if not os.path.isdir(data_path):
            raise DataError(f"{path}: its validation data {trained['data_path']} is not on this machine; "
                            "pass --data-path (and --split) of a validation split")
    else:
        data_path = resolve_path(DEFAULT_DATASET)
    split = args.split or trained.get("val_split") or "test"
    trained_on = trained.get("data_path")
    validation = trained_on is not None and public_path(data_path) == public_path(trained_on) \
        and split == trained.get("val_split")
    samples = find_samples(data_path, split)
    if args.limit:
        samples = samples[:args.limit]
    device = select_device(args.device, "one pass over the split: fine on the CPU")
    model.to(device)
    result = calibrate(model, samples, device, args.max_offset, args.step, args.quiet)
    model.cpu()
    previous = ckpt.get("calibration") or {}
    same_split = previous.get("data_path") == public_path(data_path) and previous.get("split") == split
    total = previous.get("card_logit_offset", 0.0) + result["offset"]
    ckpt["calibration"] = {
        # Added up over repeated calibrations: the total moved since training, and the IoU of the
        # model as trained when the earlier calibration measured it on the same split.
        "card_logit_offset": total, "data_path": public_path(data_path), "split": split, "validation": validation,
        "images": len(samples), "iou_after": result["iou_after"],
        "iou_before": previous["iou_before"] if same_split else result["iou_before"],
        "trained_probability_threshold": 1 / (1 + math.exp(total)),
    }
    store_release(ckpt, model)   # without the optimizer state: about two thirds of a best.pt's size
    out = resolve_path(args.output) if args.output else os.path.splitext(path)[0] + "_calibrated.pt"
    atomic_torch_save(ckpt, out)
    if not validation:
        logger.warning("%s split of %s is not the split that chose this checkpoint; make sure it is not a test split",
                       split, data_path)
    logger.info("%s, %d images: card logit offset %+.2f (the %.2f boundary moves to the trained model's "
                "probability %.3f), pooled IoU %.4f -> %.4f; saved %s", split, len(samples), result["offset"],
                MASK_THRESHOLD, result["trained_probability_threshold"], result["iou_before"], result["iou_after"],
                out)
    return {**result, "output": out, "images": len(samples)}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Calibrate a segmentation checkpoint's card boundary on a validation "
                                "split (an offset in the model, no new threshold)", add_help=add_help)
    p.add_argument("checkpoint", help=".pt checkpoint of train.py or prune.py")
    p.add_argument("--data-path", default=None,
                   help="dataset whose --split is the validation split (default: the checkpoint's training "
                   "--data-path, else dataset/ at the repo root)")
    p.add_argument("--split", default=None, help="default: the checkpoint's --val-split, else test")
    p.add_argument("--limit", type=int, default=0, help="first N images only (0 = all)")
    p.add_argument("--max-offset", type=float, default=DEFAULT_MAX_OFFSET, help="largest offset tried, in logits")
    p.add_argument("--step", type=float, default=DEFAULT_STEP, help="offset resolution, in logits")
    p.add_argument("--output", default=None, help="default: <checkpoint>_calibrated.pt next to it")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--quiet", action="store_true")
    return p


if __name__ == "__main__":
    run_script(main, get_args_parser)
