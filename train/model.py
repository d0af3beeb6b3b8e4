"""The segmentation model: torchvision LR-ASPP MobileNetV3-Large with 2 classes.

``CardSegmenter`` takes RGB in 0..1 and normalises inside, so training, evaluation and the ONNX
export all feed the same plain input. It returns logits (B, 2, H, W) instead of torchvision's
dict, which keeps the export and Torch-Pruning simple.
"""

from __future__ import annotations

import logging
import socket

import torch
from torch import nn
from torchvision.models import MobileNet_V3_Large_Weights
from torchvision.models.segmentation import lraspp_mobilenet_v3_large

from common import IMAGENET_MEAN, IMAGENET_STD

logger = logging.getLogger(__name__)

NUM_CLASSES = 2
DOWNLOAD_TIMEOUT_S = 20


class CardSegmenter(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, 3, H, W) RGB 0..1 -> (B, 2, H, W) logits
        return self.net((x - self.mean) / self.std)["out"]


def build_model(pretrained_backbone: bool = True) -> CardSegmenter:
    """LR-ASPP with the ImageNet backbone when it can be had, else from scratch with a warning."""
    weights_backbone = None
    if pretrained_backbone:
        weights_backbone = MobileNet_V3_Large_Weights.IMAGENET1K_V1
        old_timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            model = CardSegmenter(lraspp_mobilenet_v3_large(weights=None, weights_backbone=weights_backbone,
                                                            num_classes=NUM_CLASSES))
            model.pretrained_backbone = True
            return model
        except Exception as e:  # no network, proxy, corrupt cache: all mean "train from scratch"
            logger.warning("could not load the ImageNet backbone weights (%s: %s); training from scratch, "
                           "which needs more epochs. Pass --no-pretrained to silence this.",
                           type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")
        finally:
            socket.setdefaulttimeout(old_timeout)
    model = CardSegmenter(lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=NUM_CLASSES))
    model.pretrained_backbone = False
    return model


def load_checkpoint_model(path: str, map_location: str = "cpu") -> tuple[nn.Module, dict]:
    """Rebuild the model of a train.py (or prune.py) checkpoint; returns (model in eval mode, checkpoint).

    A pruned model has a changed architecture, so its checkpoint carries the whole module
    (``model_object``) rather than only a state dict.
    """
    import os

    from common import DataError

    if not os.path.isfile(path):
        raise DataError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=False)
    except Exception as e:
        raise DataError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or ("model" not in ckpt and "model_object" not in ckpt):
        raise DataError(f"{path}: not a cardscan checkpoint (no 'model' entry)")
    if ckpt.get("model_object") is not None:
        model = ckpt["model_object"]
    else:
        model = build_model(pretrained_backbone=False)
        model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt
