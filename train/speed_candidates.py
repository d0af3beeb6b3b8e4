"""Export the speed candidates' architectures to ONNX, to time them before training them.

    python train/speed_candidates.py --output-dir runs/candidates
    python demo/benchmark.py --extra-model-dir runs/candidates --skip-app

Each candidate starts from a committed checkpoint and is changed the way train.py or prune.py
would change it, without the fine-tuning that has to follow (a GPU run's work, train/README.md).
So a file's time and MACs are those of the trained candidate, its IoU is not: every name ends in
`_untrained`. FP32 only: the web app runs FP32 on WASM (FP16 is slower there).

Candidates (model.py explains the options):
    os32_full       the unpruned model with output stride 32      train.py --weights FULL --output-stride 32
    os32_pruned30   the deployed model with output stride 32      train.py --weights PRUNED --output-stride 32
    pruned50        the unpruned model pruned at ratio 0.5        prune.py FULL --pruning-ratios 0.5
    os32_pruned50   both                                          prune.py on an os32_full checkpoint
    reduced_tail    MobileNetV3's reduced tail                    train.py --weights FULL --reduced-tail
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import os

import torch

from common import TRAIN_DIR, resolve_path, run_script
from onnx_utils import conv_macs
from segmentation.export import to_onnx
from segmentation.model import load_checkpoint_model, to_output_stride_32, to_reduced_tail
from segmentation.pruning import make_pruner

logger = logging.getLogger(__name__)

CHECKPOINTS = os.path.join(TRAIN_DIR, "checkpoints")
DEFAULT_FULL = os.path.join(CHECKPOINTS, "card_segmentation.pt")
DEFAULT_PRUNED = os.path.join(CHECKPOINTS, "card_segmentation_pruned30.pt")


def pruned(model: torch.nn.Module, ratio: float) -> torch.nn.Module:
    """One-shot magnitude pruning of a copy (prune.py's pruner, no BatchNorm recalibration: the
    shapes, and so the time, are those of a fine-tuned result)."""
    model = copy.deepcopy(model)
    make_pruner(model, ratio, 1, "magnitude").step()
    return model


# name -> (how the candidate is built from (full, deployed), how it would be trained); built lazily,
# so --only builds (and prunes) nothing it does not export.
CANDIDATES = {
    "os32_full": (lambda full, deployed: to_output_stride_32(copy.deepcopy(full)),
                  "train.py --weights FULL --output-stride 32"),
    "os32_pruned30": (lambda full, deployed: to_output_stride_32(copy.deepcopy(deployed)),
                      "train.py --weights PRUNED --output-stride 32"),
    "pruned50": (lambda full, deployed: pruned(full, 0.5), "prune.py FULL --pruning-ratios 0.5"),
    "os32_pruned50": (lambda full, deployed: pruned(to_output_stride_32(copy.deepcopy(full)), 0.5),
                      "prune.py on an --output-stride 32 checkpoint, --pruning-ratios 0.5"),
    "reduced_tail": (lambda full, deployed: to_reduced_tail(full)[0], "train.py --weights FULL --reduced-tail"),
}


def main(args: argparse.Namespace) -> dict:
    full, _ = load_checkpoint_model(resolve_path(args.full))
    deployed, _ = load_checkpoint_model(resolve_path(args.pruned))
    out_dir = resolve_path(args.output_dir)
    os.makedirs(out_dir, exist_ok=True)
    report = {}
    for name, (build, how) in CANDIDATES.items():
        if args.only and name not in args.only:
            continue
        model = build(full, deployed)
        path = os.path.join(out_dir, f"{name}_untrained.onnx")
        to_onnx(model.float().eval(), path, fp16=False)
        report[name] = {"file": os.path.basename(path), "conv_macs": conv_macs(path), "trained_by": how}
        logger.info("%-14s %.2f GMACs  %s  (%s)", name, report[name]["conv_macs"] / 1e9, path, how)
    with open(os.path.join(out_dir, "candidates.json"), "w") as f:
        json.dump(report, f, indent=1)
    return report


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Export untrained speed candidates for timing", add_help=add_help)
    p.add_argument("--output-dir", required=True)
    p.add_argument("--full", default=DEFAULT_FULL, help="the unpruned checkpoint")
    p.add_argument("--pruned", default=DEFAULT_PRUNED, help="the deployed (pruned) checkpoint")
    p.add_argument("--only", nargs="*", default=None, choices=sorted(CANDIDATES),
                   help="candidate names to export (default: all)")
    return p


if __name__ == "__main__":
    run_script(main, get_args_parser)
