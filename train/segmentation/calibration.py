"""The card boundary's calibration: the offset of the card-minus-background logit with the highest
pooled IoU on a split, added to the card bias of the head's low_classifier (calibrate.py says why
and how to run it).

The head's low_classifier output is summed with the high branch before the bilinear upsampling,
whose weights sum to 1, so adding `offset` to its card bias moves every pixel's logit difference by
exactly `offset`: the exported graph, the web app and scan.py keep the one 0.5 threshold.
"""

from __future__ import annotations

import logging
import math

import torch
from tqdm import tqdm

from common import CARD_CLASS, DataError
from segmentation.dataset import load_sample
from segmentation.model import image_tensor

logger = logging.getLogger(__name__)

DEFAULT_MAX_OFFSET = 2.0   # logits: the boundary may move to probabilities 0.12..0.88 of the trained model
DEFAULT_STEP = 0.01        # logits: offsets tried


def card_head(model: torch.nn.Module) -> torch.nn.Conv2d:
    """The 1x1 convolution whose card-channel bias shifts the whole output (LR-ASPP's low_classifier)."""
    conv = getattr(getattr(getattr(model, "net", None), "classifier", None), "low_classifier", None)
    if not isinstance(conv, torch.nn.Conv2d) or conv.bias is None:
        raise DataError("not an LR-ASPP segmentation model with a biased low_classifier; cannot calibrate it")
    return conv


@torch.inference_mode()
def logit_histograms(model, samples, edges: torch.Tensor, device: str, quiet: bool = False):
    """Per bin of the card-minus-background logit (bucketize(right=True) over `edges`, so bin j+1
    holds edges[j] <= d < edges[j+1]): counts of truly-card and truly-background pixels."""
    card = torch.zeros(len(edges) + 1, dtype=torch.int64)
    background = torch.zeros_like(card)
    for img_path, mask_path in tqdm(samples, desc="calibrate", unit="img", disable=quiet):
        image, truth = load_sample(img_path, mask_path)
        logits = model(image_tensor(image, device)).float()[0]        # (2, 640, 480)
        d = (logits[CARD_CLASS] - logits[1 - CARD_CLASS]).flatten().cpu()
        bins = torch.bucketize(d, edges, right=True)
        t = torch.from_numpy(truth).flatten().bool()
        card += torch.bincount(bins[t], minlength=len(edges) + 1)
        background += torch.bincount(bins[~t], minlength=len(edges) + 1)
    return card, background


def iou_per_offset(card: torch.Tensor, background: torch.Tensor) -> torch.Tensor:
    """Pooled IoU when a pixel is card where d >= edges[j], for every j: (len(edges),) float64."""
    # Pixels at or above edge j are those in bins j+1 and up: reversed cumulative sums.
    tp = card.flip(0).cumsum(0).flip(0)[1:].double()
    fp = background.flip(0).cumsum(0).flip(0)[1:].double()
    return tp / (card.sum().double() + fp)      # the caller makes sure there are card pixels


def calibrate(model, samples, device: str, max_offset: float = DEFAULT_MAX_OFFSET, step: float = DEFAULT_STEP,
              quiet: bool = False) -> dict:
    """Adds the best offset to the card bias of `model` in place; returns what it measured."""
    n = round(max_offset / step)
    edges = torch.arange(-n, n + 1, dtype=torch.float64).mul(step).float()   # edges[n] == 0 exactly
    card, background = logit_histograms(model, samples, edges, device, quiet)
    if card.sum() == 0:
        raise DataError("the split has no card pixels: nothing to calibrate the card boundary on")
    iou = iou_per_offset(card, background)
    # The best IoU; among equal ones the offset closest to 0 (the model as trained).
    best = max(range(len(edges)), key=lambda j: (iou[j].item(), -abs(j - n)))
    offset = -edges[best].item()     # card where d + offset >= 0, i.e. d >= edges[best]
    conv = card_head(model)
    with torch.no_grad():
        conv.bias[CARD_CLASS] += offset
    if abs(offset) >= max_offset - step / 2:
        logger.warning("the best offset %.2f is at the limit (--max-offset %.2f): the model's probabilities are "
                       "far from the labels' boundary; check the masks before trusting it", offset, max_offset)
    return {"offset": offset, "iou_before": iou[n].item(), "iou_after": iou[best].item(),
            # Where the 0.5 boundary now lies on the uncalibrated model's probability.
            "trained_probability_threshold": 1 / (1 + math.exp(offset)),
            "card_pixels": int(card.sum()), "background_pixels": int(background.sum())}


def remove_calibration(model, ckpt: dict) -> float:
    """The inverse of calibrate(): takes a calibrated checkpoint's recorded offset back out of `model`'s
    card bias in place and drops the record from `ckpt`; returns the offset (0.0 when uncalibrated)."""
    record = ckpt.pop("calibration", None)
    if not record:
        return 0.0
    offset = record["card_logit_offset"]
    with torch.no_grad():
        card_head(model).bias[CARD_CLASS] -= offset
    return offset
