"""Structured channel pruning of the segmentation model with Torch-Pruning 1.6.1 (prune.py runs it).

Channels are removed for real (smaller tensors, fewer MACs), unlike torch.nn.utils.prune's masks.
The LR-ASPP head's two 1x1 classifier convolutions are never pruned: their output channels are
the 2 classes.
"""

from __future__ import annotations

import copy
import math

import torch
from torch import nn

from common import IMAGE_HEIGHT, IMAGE_WIDTH, ScriptError

# Torch-Pruning traces the graph with this input; the network is fully convolutional, so a
# smaller one than 480x640 gives the same dependency groups, faster.
TRACE_SIZE = (1, 3, 320, 240)
BN_CALIBRATION_BATCHES = 20


def _tp():
    try:
        import torch_pruning as tp
    except ImportError:
        raise ScriptError("prune.py needs Torch-Pruning: pip install torch-pruning==1.6.1") from None
    return tp


def ignored_layers(model: nn.Module) -> list[nn.Module]:
    """The LR-ASPP heads' 2-class convolutions: their output channels are the classes."""
    head = model.net.classifier
    return [head.low_classifier, head.high_classifier]


def count_macs_params(model: nn.Module) -> tuple[float, int]:
    """(MACs, parameters) at the deployment size 1x3x640x480."""
    tp = _tp()
    device = next(model.parameters()).device
    macs, params = tp.utils.count_ops_and_params(model, torch.rand(1, 3, IMAGE_HEIGHT, IMAGE_WIDTH, device=device))
    return float(macs), int(params)


def make_pruner(model: nn.Module, ratio: float, steps: int, importance: str):
    tp = _tp()
    imp = tp.importance.GroupTaylorImportance() if importance == "taylor" else \
        tp.importance.GroupMagnitudeImportance(p=2)
    example = torch.rand(*TRACE_SIZE, device=next(model.parameters()).device)
    # CardSegmenter already returns the (B, 2, H, W) logits tensor, not torchvision's dict, so no
    # output_transform is needed; the squeeze-excitation convolutions are grouped with the
    # channels they scale by the tracer.
    return tp.pruner.BasePruner(model, example, importance=imp, pruning_ratio=ratio, iterative_steps=steps,
                                ignored_layers=ignored_layers(model), round_to=8)


@torch.no_grad()
def recalibrate_bn(model: nn.Module, loader, args, batches: int = BN_CALIBRATION_BATCHES) -> None:
    """Re-estimate BatchNorm statistics of the pruned network (cumulative average over batches)."""
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [bn.momentum for bn in bns]
    for bn in bns:
        bn.reset_running_stats()
        bn.momentum = None
    model.train()
    device = torch.device(args.device)
    for i, (images, _) in enumerate(loader):
        if i >= batches:
            break
        model(images.to(device))
    for bn, m in zip(bns, momenta):
        bn.momentum = m
    model.eval()


def find_ratio_for_macs(model: nn.Module, target: float, importance: str) -> float:
    """Smallest pruning ratio whose one-shot result keeps at most `target` x the MACs (bisection)."""
    base, _ = count_macs_params(model)
    lo, hi = 0.0, 0.95
    for _ in range(8):
        mid = (lo + hi) / 2
        trial = copy.deepcopy(model)
        make_pruner(trial, mid, 1, "magnitude" if importance == "taylor" else importance).step()
        if count_macs_params(trial)[0] / base <= target:
            hi = mid
        else:
            lo = mid
    return math.ceil(hi * 1000) / 1000   # round up: a larger ratio never keeps more MACs
