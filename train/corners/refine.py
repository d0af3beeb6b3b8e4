"""Corner refinement: a small CNN that moves each YOLO corner onto the card's edges.

Why a second stage: YOLO-pose regresses every corner from the one anchor that found the card,
so a large card's corners are offsets of 150-300 px from a stride-16/32 cell, and the last few
pixels are the hardest part of that regression (the shipped detector: 70 % of corners within 5 px,
median 3.5 px). A corner is a local pattern, two straight edges meeting, which a network looking
at a 64 x 64 px crop centred on the guess pins down to about a pixel.

Geometry (continuous pixel coordinates, as the detector's output: the image spans 0..W x 0..H):
  - each corner's crop is rotated by ROTATION_DEG[k] so the card lies towards the crop's bottom
    right for every corner (TL as is, TR turned a quarter, ...): one network serves all four;
  - crop pixel (i, j) samples the image at centre + R_k @ (j - 31.5, i - 31.5) (bilinear, zero
    outside the image), R_k mapping crop offsets to image offsets;
  - the network returns the corner's offset from the crop centre in crop pixels (soft-argmax over a
    16 x 16 heat map, so sub-pixel and at most CROP_PX / 2 away); image offset = R_k @ that.
The same code builds the training crops, runs in Python evaluation and is exported inside
card_corners.onnx, so training and deployment sample the image identically.
"""

from __future__ import annotations

import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from common import TRAIN_DIR, DataError
from corners.metrics import decode_tensor

# The committed refiner (trained on the synthetic dataset): the default of evaluation and export.
DEFAULT_REFINER = os.path.join(TRAIN_DIR, "checkpoints", "card_corner_refiner.pt")
CROP_PX = 64
# Crop rotation per corner (TL, TR, BR, BL), degrees, y down: the card extends to +x and +y of
# the crop for every corner.
ROTATION_DEG = (0.0, 90.0, 180.0, 270.0)
HEATMAP = 16   # heat-map cells per side: 4 crop pixels each, refined below a pixel by soft-argmax
# Two looks: the first brings a corner the detector put 15-25 px off into the middle of the crop,
# where the second pins it down. Corners the detector puts up to 16 px outside the image are still
# refined: the crop reaches 32 px, so a true corner near the border is in it.
REFINE_STEPS = 2
OUTSIDE_MARGIN_PX = 16.0


def rotations(dtype=torch.float32, device=None) -> torch.Tensor:
    """(4, 2, 2) R_k: crop offset (x, y) -> image offset, per corner."""
    rad = torch.tensor([math.radians(d) for d in ROTATION_DEG], dtype=torch.float64)
    c, s = torch.cos(rad).round(decimals=12), torch.sin(rad).round(decimals=12)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2).to(dtype=dtype, device=device)


def crop_offsets(dtype=torch.float32, device=None) -> torch.Tensor:
    """(CROP_PX * CROP_PX, 2) crop pixel centres (x, y) relative to the crop centre, row-major."""
    u = torch.arange(CROP_PX, dtype=dtype, device=device) - (CROP_PX - 1) / 2
    gy, gx = torch.meshgrid(u, u, indexing="ij")
    return torch.stack([gx, gy], -1).reshape(-1, 2)


def extract_crops(images: torch.Tensor, centres: torch.Tensor, rot: torch.Tensor) -> torch.Tensor:
    """images (B, 3, H, W) float; centres (B, K, 2) continuous px; rot (K, 2, 2) or (B, K, 2, 2)
    -> crops (B * K, 3, CROP_PX, CROP_PX), image b's K crops consecutive."""
    b, k = centres.shape[:2]
    h, w = images.shape[-2:]
    rot = rot.expand(b, k, 2, 2)
    # (P, 2) @ (B, K, 2, 2)^T -> (B, K, P, 2): every crop pixel's image position.
    pts = centres[:, :, None, :] + crop_offsets(images.dtype, images.device) @ rot.transpose(-1, -2)
    # grid_sample with align_corners=False: -1 and 1 are the outer edges of the image, exactly
    # continuous 0 and W (H).
    scale = torch.tensor([2.0 / w, 2.0 / h], dtype=images.dtype, device=images.device)
    grid = (pts * scale - 1).reshape(b, k * CROP_PX, CROP_PX, 2)
    crops = F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    # (B, 3, K * CROP, CROP) -> (B * K, 3, CROP, CROP)
    return crops.reshape(b, 3, k, CROP_PX, CROP_PX).transpose(1, 2).reshape(b * k, 3, CROP_PX, CROP_PX)


def _cbr(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, dilation, dilation, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class CornerRefiner(nn.Module):
    """(N, 3, 64, 64) RGB 0..1 crops -> (N, 2) corner offset from the crop centre, crop pixels.

    64 -> 32 -> 16 -> 8 px with dilated 8x8 convolutions (receptive field over the whole crop, so
    it sees both edges), the 8x8 map upsampled onto the 16x16 one, one logit per 16x16 cell, and
    the expectation of the cell centres under their softmax. About 99 k parameters.
    """

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(_cbr(3, 16), _cbr(16, 24, 2))                               # 32 x 32
        self.mid = nn.Sequential(_cbr(24, 32, 2), _cbr(32, 32))                              # 16 x 16
        self.deep = nn.Sequential(_cbr(32, 48, 2), _cbr(48, 48, 1, 2), _cbr(48, 48, 1, 4))   # 8 x 8
        self.head = nn.Sequential(_cbr(48 + 32, 32), nn.Conv2d(32, 1, 1))
        cell = CROP_PX / HEATMAP
        self.register_buffer("cells", (torch.arange(HEATMAP) + 0.5) * cell - CROP_PX / 2, persistent=False)

    def forward(self, crops: torch.Tensor) -> torch.Tensor:
        mid = self.mid(self.stem(crops))
        deep = F.interpolate(self.deep(mid), scale_factor=2.0, mode="bilinear", align_corners=False)
        logits = self.head(torch.cat([deep, mid], 1)).flatten(1).float()          # (N, 16 * 16)
        prob = logits.softmax(-1).view(-1, HEATMAP, HEATMAP)                       # rows = y, columns = x
        x = (prob.sum(1) * self.cells).sum(-1)
        y = (prob.sum(2) * self.cells).sum(-1)
        return torch.stack([x, y], -1)


def refine_corners(refiner: CornerRefiner, images: torch.Tensor, corners: torch.Tensor, steps: int = REFINE_STEPS,
                   margin: float = OUTSIDE_MARGIN_PX) -> torch.Tensor:
    """images (B, 3, H, W) RGB 0..1; corners (B, 4, 2) continuous px -> refined (B, 4, 2).

    `steps` looks, each from the previous answer. A corner the detector puts more than `margin` px
    outside the image is returned unchanged: the card runs out of the frame there, and a crop of
    mostly padding has no corner to find."""
    b, k = corners.shape[:2]
    h, w = images.shape[-2:]
    rot = rotations(images.dtype, images.device)
    moved = corners
    for _ in range(steps):
        crops = extract_crops(images, moved.to(images.dtype), rot)
        offset = refiner(crops).view(b, k, 2).to(corners.dtype)
        moved = moved + (rot.to(corners.dtype) @ offset[..., None])[..., 0]
    x, y = corners[..., 0], corners[..., 1]
    inside = (x >= -margin) & (x <= w + margin) & (y >= -margin) & (y <= h + margin)
    return torch.where(inside[..., None], moved, corners)


class DecodeAndRefine(nn.Module):
    """The post-processing stage inside card_corners.onnx: the detector's raw output -> the card's
    confidence and refined corners. images (1, 3, 640, 480), output0 (1, 17, 6300) ->
    corners (1, 4, 2) continuous px, score (1,)."""

    def __init__(self, refiner: CornerRefiner):
        super().__init__()
        self.refiner = refiner

    def forward(self, images: torch.Tensor, output0: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        corners, score = decode_tensor(output0)
        return refine_corners(self.refiner, images, corners), score


def load_refiner(path: str, device: str | torch.device = "cpu") -> CornerRefiner:
    """A CornerRefiner in eval mode from train_corner_refiner.py's checkpoint, or a DataError."""
    if not os.path.isfile(path):
        raise DataError(f"{path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        if ckpt.get("crop_px") != CROP_PX:
            raise DataError(f"{path}: crop size {ckpt.get('crop_px')} px, this code uses {CROP_PX}")
        model = CornerRefiner()
        model.load_state_dict(ckpt["model"])
    except DataError:
        raise
    except Exception as e:   # not a refiner checkpoint: say so instead of a torch traceback
        raise DataError(f"{path}: not a corner refiner checkpoint ({type(e).__name__}: {e})") from None
    return model.to(device).eval()
