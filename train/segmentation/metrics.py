"""Segmentation loss and split-level metrics."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import distributed as dist

from common import CARD_CLASS


def dice_loss(logits: torch.Tensor, target: torch.Tensor, eps: float = 1.0) -> torch.Tensor:
    """Soft Dice of the card class. logits (B, 2, H, W), target (B, H, W) in {0, 1}."""
    prob = logits.float().softmax(1)[:, CARD_CLASS]
    t = target.float()
    inter = (prob * t).sum((1, 2))
    union = prob.sum((1, 2)) + t.sum((1, 2))
    return (1 - (2 * inter + eps) / (union + eps)).mean()


def segmentation_loss(logits: torch.Tensor, target: torch.Tensor, dice_weight: float = 1.0) -> torch.Tensor:
    return F.cross_entropy(logits.float(), target) + dice_weight * dice_loss(logits, target)


class ConfusionMatrix:
    """2 x 2 pixel counts over a whole split (rows = truth, columns = prediction).

    Metrics come from the summed counts, not from an average of per-batch scores, so a batch of
    small cards weighs what its pixels weigh.
    """

    def __init__(self, num_classes: int = 2):
        self.n = num_classes
        self.mat = torch.zeros((num_classes, num_classes), dtype=torch.int64)

    def update(self, target: torch.Tensor, pred: torch.Tensor) -> None:
        k = target.flatten().long() * self.n + pred.flatten().long()
        self.mat += torch.bincount(k.cpu(), minlength=self.n ** 2).reshape(self.n, self.n)

    def reduce_from_all_processes(self) -> None:
        self.mat = _all_reduce(self.mat)

    def compute(self) -> dict[str, float]:
        m = self.mat.double()
        tp = m[CARD_CLASS, CARD_CLASS]
        fp = m[:, CARD_CLASS].sum() - tp
        fn = m[CARD_CLASS, :].sum() - tp
        total = m.sum()
        # An empty split or one without card pixels predicted and present scores 1 (nothing missed).
        iou = (tp / (tp + fp + fn)).item() if (tp + fp + fn) > 0 else 1.0
        dice = (2 * tp / (2 * tp + fp + fn)).item() if (tp + fp + fn) > 0 else 1.0
        acc = (m.diag().sum() / total).item() if total > 0 else 1.0
        return {"iou": iou, "dice": dice, "pixel_acc": acc}


def reduce_sum(*values: float) -> list[float]:
    """The values summed over all processes (as they are without torch.distributed)."""
    return _all_reduce(torch.tensor(values, dtype=torch.float64)).tolist()


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    if not (dist.is_available() and dist.is_initialized()):
        return t
    t = t.to("cuda" if dist.get_backend() == "nccl" else "cpu")   # NCCL reduces CUDA tensors only
    dist.all_reduce(t)
    return t.cpu()
