"""Segmentation model -> ONNX behind a parity gate: the library under export.py and prune.py.

Graph contract (see the model card):
    input  "image": float32 [1, 3, 640, 480], RGB, 0..1 (ImageNet normalisation is inside)
    output "mask":  float32 [1, 1, 640, 480], probability that the pixel is card
The gate: onnx.checker (full check), then onnxruntime CPU against PyTorch FP32 on real images.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from common import IMAGE_HEIGHT, IMAGE_WIDTH, DataError
from onnx_utils import GateError, check_model, ort_session, to_fp16
from segmentation.dataset import find_samples, load_sample

# opset 13: HardSwish becomes HardSigmoid + Mul, which onnxruntime-web's WASM backend runs faster
# and every WebGPU/WASM/mobile build supports.
DEFAULT_OPSET = 13
INPUT_NAME, OUTPUT_NAME = "image", "mask"
# Parity gate: the thresholded masks must agree (IoU) and the file's probabilities must stay within
# a bound of the model's, computed in float64 (the exact answer, up to rounding far below these).
# FP16 rounding moves probabilities near the decision boundary by a few percent at most. FP32
# rounding depends on the CPU's kernels and on the model: how far PyTorch's own FP32 forward lands
# from float64 on the same images measures it, and the file may be GATE_FP32_ROUNDING_FACTOR times
# as far (another kernel library sums in another order), never less strict than the fixed bound.
GATE_MIN_MASK_IOU = 0.99
GATE_MAX_PROB_DIFF = {"fp32": 1e-3, "fp16": 0.1}
GATE_FP32_ROUNDING_FACTOR = 10.0
GATE_IMAGES = 8


def card_logit_model(model: nn.Module) -> nn.Module:
    """A copy of a CardSegmenter whose LR-ASPP head returns one channel: logit_card - logit_background.

    The head ends in two 1x1 convolutions (low_classifier on the 1/8 features, high_classifier on
    the upsampled 1/16 ones) whose sum is then resized bilinearly to the input size. Convolution
    and bilinear resizing are linear, so the class difference can be taken first, in the weights:
    w' = w[1] - w[0], b' = b[1] - b[0]. The copy computes (B, 1, H, W) = resize(l1 - l0) with one
    output channel from the classifier on: half the classifier work and a 1-channel full-size Resize.
    """
    net = getattr(model, "net", None)
    head = getattr(net, "classifier", None)
    convs = [getattr(head, name, None) for name in ("low_classifier", "high_classifier")]
    if not all(isinstance(c, nn.Conv2d) and c.out_channels == 2 and c.bias is not None for c in convs):
        raise TypeError(f"{type(model).__name__} is not a 2-class LR-ASPP CardSegmenter: cannot fold its head")
    folded = copy.deepcopy(model)
    for name in ("low_classifier", "high_classifier"):
        conv = getattr(folded.net.classifier, name)
        diff = nn.Conv2d(conv.in_channels, 1, 1).to(conv.weight.device)
        with torch.no_grad():
            diff.weight.copy_(conv.weight[1:2] - conv.weight[0:1])
            diff.bias.copy_(conv.bias[1:2] - conv.bias[0:1])
        setattr(folded.net.classifier, name, diff)
    return folded


class ExportWrapper(nn.Module):
    """(1, 3, H, W) RGB 0..1 -> (1, 1, H, W) card probability, the head rewritten for speed.

    softmax(resize(l))[:, 1] == sigmoid(resize(l1 - l0)): resizing is linear and a 2-class softmax
    is the sigmoid of the logit difference. The graph so has no Softmax, and its full-size Resize
    moves one channel instead of two: 0.78x the time natively, 0.93x in WASM for the pruned model
    (README, Browser speed). The parity gate compares this graph against reference_probability.
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = card_logit_model(model)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.model(image))


def reference_probability(model: nn.Module, image: torch.Tensor) -> torch.Tensor:
    """(B, 3, H, W) RGB 0..1 -> (B, 1, H, W): the definition of the "mask" output, as in training."""
    return model(image).softmax(1)[:, 1:2]


def to_input(images: np.ndarray) -> np.ndarray:
    """(N, 640, 480, 3) uint8 RGB -> (N, 3, 640, 480) float32 0..1, the graph's input."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def to_onnx(model: nn.Module, path: str, fp16: bool, opset: int = DEFAULT_OPSET) -> None:
    """Write the ONNX graph; fp16 converts weights and compute, keeping float32 IO."""
    import onnx

    wrapper = ExportWrapper(model).eval().float()
    dummy = torch.rand(1, 3, IMAGE_HEIGHT, IMAGE_WIDTH)
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "fp32.onnx")
        torch.onnx.export(wrapper, (dummy,), raw, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          opset_version=opset, do_constant_folding=True, dynamo=False)
        proto = onnx.load(raw)
    onnx.save(to_fp16(proto) if fp16 else proto, path)


def predict_onnx(path: str, images: np.ndarray, threads: int = 0) -> np.ndarray:
    """(N, 640, 480, 3) uint8 RGB -> (N, 640, 480) probabilities through onnxruntime CPU."""
    sess = ort_session(path, threads)
    return np.stack([sess.run([OUTPUT_NAME], {INPUT_NAME: x[None]})[0][0, 0] for x in to_input(images)])


@torch.inference_mode()
def predict_torch(model: nn.Module, images: np.ndarray, dtype: torch.dtype = torch.float32) -> np.ndarray:
    """(N, 640, 480, 3) uint8 RGB -> (N, 640, 480) probabilities in PyTorch, the softmax definition,
    computed in `dtype` (float64: the reference of the parity gate) on a copy of the model.

    Deliberately not ExportWrapper: the gate then checks the head rewrite along with the export.
    """
    model = copy.deepcopy(model).eval().to(dtype)
    return np.stack([reference_probability(model, torch.from_numpy(x[None]).to(dtype))[0, 0].double().numpy()
                     for x in to_input(images)])


def gate_reference(model: nn.Module, images: np.ndarray) -> tuple[np.ndarray, float]:
    """The gate's reference on (N, 640, 480, 3) uint8 images: the model's probabilities in float64
    (N, 640, 480), and PyTorch FP32's largest difference from them. One per model, for both files."""
    ref = predict_torch(model, images, torch.float64)
    return ref, float(np.abs(predict_torch(model, images) - ref).max())


def parity_gate(path: str, model: nn.Module, images: np.ndarray, precision: str,
                reference: tuple[np.ndarray, float] | None = None) -> dict:
    """onnx.checker, then onnxruntime against the model in float64 on (N, 640, 480, 3) uint8 images:
    mask IoU and the largest probability difference, within max(GATE_MAX_PROB_DIFF, the factor x
    PyTorch FP32's own largest difference on the same images); raises GateError. `reference`:
    gate_reference(model, images), when the caller gates several files of one model."""
    check_model(path)
    got = predict_onnx(path, images).astype(np.float64)
    ref, torch_fp32 = reference if reference is not None else gate_reference(model, images)
    if got.shape != ref.shape or not np.isfinite(got).all():
        raise GateError(f"{path}: output shape {got.shape} / finite={np.isfinite(got).all()}, expected {ref.shape}")
    allowed = max(GATE_MAX_PROB_DIFF[precision], GATE_FP32_ROUNDING_FACTOR * torch_fp32)
    a, b = got >= 0.5, ref >= 0.5
    union = np.logical_or(a, b).sum()
    mask_iou = float(np.logical_and(a, b).sum() / union) if union else 1.0
    max_diff = float(np.abs(got - ref).max())
    report = {"mask_iou": mask_iou, "max_prob_diff": max_diff, "images": int(len(images)),
              "min_mask_iou": GATE_MIN_MASK_IOU, "max_prob_diff_allowed": allowed, "torch_fp32_prob_diff": torch_fp32}
    if mask_iou < GATE_MIN_MASK_IOU or max_diff > allowed:
        raise GateError(f"{path} fails the parity gate: mask IoU {mask_iou:.4f} (>= {GATE_MIN_MASK_IOU} needed), "
                        f"max probability difference {max_diff:.4f} (<= {allowed:.4f} needed; PyTorch FP32 itself: "
                        f"{torch_fp32:.2e})")
    return report


def gate_images(data_path: str, n: int = GATE_IMAGES, split: str = "test") -> np.ndarray:
    """(n, 640, 480, 3) uint8 RGB: the first n images of the split whose mask holds a card.

    Decided by the mask, not the file name, so a user's own card-free images stay out of the gate
    (an all-background pair passes any model that outputs background).
    """
    images = []
    for sample in find_samples(data_path, split):
        image, mask = load_sample(*sample)
        if mask.any():
            images.append(image)
            if len(images) == n:
                break
    if not images:
        raise DataError(f"{os.path.join(data_path, split, 'masks')}: no mask with a card for the parity gate")
    return np.stack(images)


def export_and_verify(model: nn.Module, path: str, fp16: bool, images: np.ndarray, opset: int = DEFAULT_OPSET,
                      post_export: Callable[[str], None] | None = None,
                      reference: tuple[np.ndarray, float] | None = None) -> dict:
    """Export to a temporary file, gate it, and only then move it to ``path``.

    ``post_export`` may edit the temporary file before the gate (tests use it to corrupt one).
    On failure nothing is left at ``path``.
    """
    precision = "fp16" if fp16 else "fp32"
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-", suffix=".onnx")
    os.close(fd)
    try:
        to_onnx(model, tmp, fp16, opset)
        if post_export is not None:
            post_export(tmp)
        report = parity_gate(tmp, model, images, precision, reference)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        for p in (tmp, path):   # an older file at `path` no longer matches this checkpoint
            if os.path.exists(p):
                os.remove(p)
        raise
    return {"file": os.path.basename(path), "precision": precision, "opset": opset, "gate": report}


def checkpoint_summary(ckpt: dict) -> dict:
    """What a train.py, prune.py or average_checkpoints.py checkpoint says about its training, for the model
    card (an average describes the run of its last input, plus what it averaged)."""
    args = ckpt.get("args") or {}
    if ckpt.get("pruning") and "command" not in ckpt:
        # A prune.py checkpoint carries its source's history; what describes it is the pruning run.
        # (train.py's fine-tunes of a pruned model keep the pruning record but describe their own run.)
        return {k: v for k, v in {
            "source_checkpoint": ckpt.get("source_checkpoint"), "lr": args.get("lr"),
            "batch_size": args.get("batch_size"), "size": args.get("size"),
            "max_train_images": args.get("max_train_images"), "amp_dtype": args.get("amp_dtype"),
            "pruning": ckpt["pruning"], "averaged_from": ckpt.get("averaged_from"),
            "average_command": ckpt.get("average_command"), "calibration": ckpt.get("calibration")}.items()
            if v is not None}
    history = ckpt.get("history") or []
    # A best.pt carries the history up to its own epoch; the epochs asked for tell the reader whether
    # the run went on (or stopped early) after it.
    planned = args.get("epochs") if isinstance(args.get("epochs"), int) and args["epochs"] > len(history) else None
    return {k: v for k, v in {
        "command": ckpt.get("command"), "hardware": ckpt.get("hardware"),
        "train_images": ckpt.get("train_images"), "val_images": ckpt.get("val_images"),
        "epochs_run": len(history), "epochs_planned": planned, "best_epoch": ckpt.get("best_epoch"),
        "best_val_iou": ckpt.get("best_iou"),
        "train_time_min": round(sum(r.get("epoch_s", 0) for r in history) / 60, 1) if history else None,
        "lr": args.get("lr"), "batch_size": args.get("batch_size"), "size": args.get("size"),
        "low_res_epochs": args.get("low_res_epochs"), "pretrained_backbone": ckpt.get("pretrained_backbone"),
        "amp_dtype": args.get("amp_dtype"), "output_stride": args.get("output_stride"),
        "reduced_tail": args.get("reduced_tail") or None, "dice_weight": args.get("dice_weight"),
        "source_checkpoint": ckpt.get("source_checkpoint"), "pruning": ckpt.get("pruning"),
        "averaged_from": ckpt.get("averaged_from"), "average_command": ckpt.get("average_command"),
        "calibration": ckpt.get("calibration"),
    }.items() if v is not None}
