"""Keypoint loss for the corner model: Ultralytics' OKS loss plus an L1 term that keeps pulling
at a few pixels.

Ultralytics' keypoint loss is 1 - exp(-e), e = r^2 / (8 sigma^2 A), with r the corner error and
A the box area. At the loss width of 0.25 (corners/data.py) and a typical card box
(A = 300 x 420 px) that is r^2 / 63000: a 10 px error costs 0.0016 and its gradient is 0.0003
per px, a 5 px error half that. Next to the box losses this is nothing: a regression term too
weak to pull the last few pixels. A tighter sigma is no cure: it has no gradient for a corner
100 px off, which every corner is early in training.

The added term is the L1 distance per coordinate divided by sqrt(A), i.e. in units of the card's
size like OKS: its gradient is the same at 100 px and at 1 px, so it pulls just as hard on the
last few pixels that the 5 px target is about, and, being L1, it is not dragged by the odd
outlier. It is scaled like the OKS term (mean over the visible corners, then Ultralytics' `pose`
gain) and weighted by `l1_gain` (corners.data.KPT_L1_GAIN by default; 0 gives Ultralytics' loss unchanged).
"""

from __future__ import annotations

import torch
from ultralytics.utils.loss import KeypointLoss, v8PoseLoss

from corners.data import KPT_L1_GAIN


class CornerKeypointLoss(KeypointLoss):
    def __init__(self, sigmas: torch.Tensor, l1_gain: float = KPT_L1_GAIN) -> None:
        super().__init__(sigmas)
        self.l1_gain = l1_gain

    def forward(self, pred_kpts: torch.Tensor, gt_kpts: torch.Tensor, kpt_mask: torch.Tensor,
                area: torch.Tensor) -> torch.Tensor:
        """pred_kpts (N, K, 3) and gt_kpts (N, K, 3) in grid units (pixels / stride), kpt_mask (N, K)
        bool = corner visible, area (N, 1) box area in grid units^2. Returns a scalar."""
        oks = super().forward(pred_kpts, gt_kpts, kpt_mask, area)
        if not self.l1_gain:
            return oks
        l1 = (pred_kpts[..., :2] - gt_kpts[..., :2]).abs().sum(-1) / (area.sqrt() + 1e-9)     # (N, K)
        factor = kpt_mask.shape[1] / (kpt_mask.sum(1) + 1e-9)         # as Ultralytics: mean over visible
        return oks + self.l1_gain * (factor.view(-1, 1) * l1 * kpt_mask).mean()


class CornerPoseLoss(v8PoseLoss):
    """v8PoseLoss (box, pose, keypoint visibility, class, DFL) with CornerKeypointLoss."""

    def __init__(self, model: torch.nn.Module, l1_gain: float = KPT_L1_GAIN) -> None:
        head = model.model[-1]
        # YOLO26-style heads (Pose26, end-to-end one2one) have losses of their own, and Ultralytics
        # rebuilds those on resume: this class would silently not be the loss that trains them.
        if type(head).__name__ != "Pose" or getattr(head, "one2one_cv2", None) is not None:
            raise ValueError(f"the corner loss is written for Ultralytics' Pose head (yolo12n-pose), not "
                             f"{type(head).__name__}")
        if l1_gain < 0:
            raise ValueError(f"the L1 corner gain must be >= 0, got {l1_gain}")
        super().__init__(model)
        self.keypoint_loss = CornerKeypointLoss(self.keypoint_loss.sigmas, l1_gain)
