"""The segmentation model: torchvision LR-ASPP MobileNetV3-Large with 2 classes.

``CardSegmenter`` takes RGB in 0..1 and normalises inside, so training, evaluation and the ONNX
export all feed the same plain input. It returns logits (B, 2, H, W) instead of torchvision's
dict, which keeps the export and Torch-Pruning simple.

Two architecture options trade accuracy for speed (train.py --output-stride / --reduced-tail):
- output stride 16 (torchvision's LR-ASPP): the backbone's last stage is dilated and runs at 1/16 of
  the input (40 x 30 at 640 x 480); it holds most of the costliest nodes of the deployed model in
  WASM, about a third of its time (README, Browser speed). Output stride 32 strides that
  stage instead (20 x 15): the same weights at a quarter of the cost, so a trained model converts
  and fine-tunes (to_output_stride_32).
- reduced_tail: torchvision's MobileNetV3 option that halves the last stage's channels; its shapes
  differ, so only the matching tensors of ImageNet or a checkpoint carry over (load_matching).
"""

from __future__ import annotations

import logging
import pickle
import socket
import types

import torch
from torch import nn
from torchvision.models import MobileNet_V3_Large_Weights
from torchvision.models.segmentation import lraspp_mobilenet_v3_large

from common import IMAGENET_MEAN, IMAGENET_STD, RUN_STATE_KEYS, public_command, public_path

logger = logging.getLogger(__name__)

NUM_CLASSES = 2
DOWNLOAD_TIMEOUT_S = 20
OUTPUT_STRIDES = (16, 32)


class CardSegmenter(nn.Module):
    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # (B, 3, H, W) RGB 0..1 -> (B, 2, H, W) logits
        return self.net((x - self.mean) / self.std)["out"]


def _lraspp(reduced_tail: bool, output_stride: int) -> nn.Module:
    if output_stride not in OUTPUT_STRIDES:
        raise ValueError(f"output stride {output_stride}: expected one of {OUTPUT_STRIDES}")
    if not reduced_tail and output_stride == 16:
        return lraspp_mobilenet_v3_large(weights=None, weights_backbone=None, num_classes=NUM_CLASSES)
    # torchvision's builder fixes the backbone (dilated, full tail); build the same network around
    # the backbone asked for.
    from torchvision.models import mobilenet_v3_large
    from torchvision.models.segmentation.lraspp import _lraspp_mobilenetv3

    backbone = mobilenet_v3_large(weights=None, dilated=output_stride == 16, reduced_tail=reduced_tail)
    return _lraspp_mobilenetv3(backbone, NUM_CLASSES)


def image_tensor(image, device: str = "cpu") -> torch.Tensor:
    """(H, W, 3) uint8 RGB frame (numpy) -> (1, 3, H, W) float 0..1 on `device`, CardSegmenter's input."""
    return torch.from_numpy(image).permute(2, 0, 1)[None].float().div(255).to(device)


def load_matching(model: nn.Module, state: dict[str, torch.Tensor]) -> tuple[int, int]:
    """Copies the tensors of `state` whose name and shape match into `model`; returns (copied, total).

    For an architecture whose shapes differ in part (reduced_tail): the rest keeps its initialisation.
    """
    own = model.state_dict()
    matching = {k: v for k, v in state.items() if k in own and own[k].shape == v.shape}
    own.update(matching)
    model.load_state_dict(own)
    return len(matching), len(own)


def build_model(pretrained_backbone: bool = True, output_stride: int = 16, reduced_tail: bool = False) -> CardSegmenter:
    """LR-ASPP with the ImageNet backbone when it can be had, else from scratch with a warning."""
    model = CardSegmenter(_lraspp(reduced_tail, output_stride))
    model.pretrained_backbone = False
    if pretrained_backbone:
        old_timeout = socket.getdefaulttimeout()
        socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
        try:
            state = MobileNet_V3_Large_Weights.IMAGENET1K_V1.get_state_dict(progress=False, check_hash=True)
            # torchvision's segmentation backbone keeps the classifier-free `features` part.
            state = {k.removeprefix("features."): v for k, v in state.items() if k.startswith("features.")}
            own = model.net.backbone.state_dict()
            missing = [k for k, v in state.items() if k not in own or own[k].shape != v.shape]
            if missing and not reduced_tail:   # only the reduced tail may differ
                raise ValueError(f"{len(missing)} ImageNet tensors do not fit the backbone, e.g. {missing[0]}")
            copied, _ = load_matching(model.net.backbone, state)
            if reduced_tail:
                logger.info("ImageNet backbone: %d of %d tensors match the reduced tail", copied, len(state))
            model.pretrained_backbone = True
        except Exception as e:  # no network, proxy, corrupt cache: all mean "train from scratch"
            logger.warning("could not load the ImageNet backbone weights (%s: %s); training from scratch, "
                           "which needs more epochs. Pass --no-pretrained to silence this.",
                           type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")
        finally:
            socket.setdefaulttimeout(old_timeout)
    return model


def to_reduced_tail(model: CardSegmenter) -> tuple[CardSegmenter, int, int]:
    """A new model with the reduced tail, in the model's output stride, carrying over every tensor
    whose shape still matches; returns (model, tensors copied, tensors in all)."""
    new = build_model(False, output_stride(model), reduced_tail=True)
    copied, total = load_matching(new, model.state_dict())
    new.pretrained_backbone = getattr(model, "pretrained_backbone", False)
    return new, copied, total


def checkpoint_architecture(ckpt: dict) -> tuple[int, bool]:
    """(output stride, reduced tail) a checkpoint's model was built with: its recorded args, else
    torchvision's LR-ASPP (16, full tail), as every checkpoint from before the options."""
    args = ckpt.get("args") or {}
    return args.get("output_stride") or 16, bool(args.get("reduced_tail"))


def _dilated_convs(model: nn.Module) -> list[nn.Conv2d]:
    return [m for m in model.net.backbone.modules() if isinstance(m, nn.Conv2d) and m.dilation != (1, 1)]


def output_stride(model: nn.Module) -> int:
    """16 while the backbone's last stage is dilated (torchvision's LR-ASPP), else 32."""
    return 16 if _dilated_convs(model) else 32


def to_output_stride_32(model: nn.Module) -> nn.Module:
    """In place: the dilated last stage becomes a strided one, as torchvision builds it undilated.

    torchvision turns the stage's first depthwise convolution from stride 2 into stride 1 with
    dilation 2, and dilates the ones after it; undoing that keeps every weight's shape, so it works
    on a trained or a pruned model alike (which then needs fine-tuning: its features move).
    """
    convs = _dilated_convs(model)
    if not convs:
        raise ValueError("the model already has output stride 32")
    for conv in convs:
        conv.dilation = (1, 1)
        conv.padding = ((conv.kernel_size[0] - 1) // 2, (conv.kernel_size[1] - 1) // 2)
    convs[0].stride = (2, 2)
    return model


class _Unpickler(pickle.Unpickler):
    """Reads checkpoints pickled before this module moved into the segmentation package: a pruned
    model is stored whole (`model_object`), and its class was then `model.CardSegmenter`."""

    def find_class(self, module: str, name: str):
        return super().find_class(MOVED_MODULES.get(module, module), name)


MOVED_MODULES = {"model": __name__}
# torch.load takes a pickle module; this one differs from pickle only in its Unpickler.
_PICKLE = types.ModuleType("segmentation_checkpoint_pickle")
_PICKLE.__dict__.update({k: getattr(pickle, k) for k in ("load", "loads", "dump", "dumps", "Pickler")},
                        Unpickler=_Unpickler)


def load_checkpoint(path: str, map_location: str = "cpu") -> dict:
    """torch.load of a train.py / prune.py checkpoint (a trusted file: a pruned model is pickled whole)."""
    return torch.load(path, map_location=map_location, weights_only=False, pickle_module=_PICKLE)


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
        ckpt = load_checkpoint(path, map_location)
    except Exception as e:
        raise DataError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {e})") from e
    if not isinstance(ckpt, dict) or ("model" not in ckpt and "model_object" not in ckpt):
        raise DataError(f"{path}: not a cardscan checkpoint (no 'model' entry)")
    if ckpt.get("model_object") is not None:
        model = ckpt["model_object"]
    else:
        stride, reduced_tail = checkpoint_architecture(ckpt)
        model = build_model(pretrained_backbone=False, output_stride=stride, reduced_tail=reduced_tail)
        model.load_state_dict(ckpt["model"])
    return model.eval(), ckpt


def _public_record(record: dict) -> None:
    """In place: the commands and checkpoint paths of a training record (and of the records it
    averaged) as public_command / public_path make them."""
    for k in ("command", "average_command"):
        if isinstance(record.get(k), str):
            record[k] = public_command(record[k])
    if isinstance(record.get("checkpoint"), str):
        record["checkpoint"] = public_path(record["checkpoint"])
    if isinstance(record.get("calibration"), dict):
        record["calibration"]["data_path"] = public_path(record["calibration"].get("data_path"))
    for entry in record.get("averaged_from") or []:
        _public_record(entry)


def store_release(ckpt: dict, model: nn.Module) -> dict:
    """Put `model` back into its checkpoint `ckpt` (in place, in whichever forms it carries the weights)
    without the run's optimizer state and without the folders of the machine it was trained on (its
    recorded options and commands keep paths inside the repository, and names elsewhere): a
    checkpoint to export, publish or fine-tune from (--weights), not to resume. calibrate.py and
    average_checkpoints.py write their outputs this way."""
    for k in RUN_STATE_KEYS:
        ckpt.pop(k, None)
    if isinstance(ckpt.get("args"), dict):
        ckpt["args"] = {k: public_path(v) if isinstance(v, str) else v for k, v in ckpt["args"].items()}
    _public_record(ckpt)
    if ckpt.get("model_object") is not None:
        ckpt["model_object"] = model
    if "model" in ckpt:
        ckpt["model"] = model.state_dict()
    return ckpt
