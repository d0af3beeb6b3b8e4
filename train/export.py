"""Export a segmentation checkpoint to ONNX (FP16 + FP32 variants) behind a parity gate.

    python train/export.py train/runs/segmentation/best.pt
    python train/export.py pruned.pt --name card_segmentation_pruned     # pruned checkpoints too

Writes train/exported_models/<name>.onnx (FP16 weights and compute, float32 input/output),
<name>_fp32.onnx, <name>.json (what was measured) and regenerates the model card
train/exported_models/README.md from every <name>.json there.

Graph contract (see the model card):
    input  "image": float32 [1, 3, 640, 480], RGB, 0..1 (ImageNet normalisation is inside)
    output "mask":  float32 [1, 1, 640, 480], probability that the pixel is card
The gate: onnx.checker (full check), then onnxruntime CPU against PyTorch FP32 on real
test images. A file that fails it is deleted and the script exits non-zero.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings
from collections.abc import Callable

import numpy as np
import onnx
import torch
from torch import nn

import model_card
from common import DEFAULT_DATASET, EXPORT_DIR, IMAGE_HEIGHT, IMAGE_WIDTH, DataError, resolve_path, setup_logging
from dataset import find_samples, load_sample
from model import load_checkpoint_model

logger = logging.getLogger(__name__)

# opset 13: HardSwish becomes HardSigmoid + Mul, which onnxruntime-web's WASM backend runs
# faster (117 vs 136 ms at 480x640, 2 threads) and every WebGPU/WASM/mobile build supports.
DEFAULT_OPSET = 13
INPUT_NAME, OUTPUT_NAME = "image", "mask"
# Parity gate: the thresholded masks must agree (IoU) and probabilities stay within a bound.
# FP16 rounding moves probabilities near the decision boundary by a few percent at most.
GATE_MIN_MASK_IOU = 0.99
GATE_MAX_PROB_DIFF = {"fp32": 1e-3, "fp16": 0.1}
GATE_IMAGES = 8


class GateError(Exception):
    """The exported file does not match PyTorch; the message says how."""


class ExportWrapper(nn.Module):
    """(1, 3, H, W) RGB 0..1 -> (1, 1, H, W) card probability (softmax class 1)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model(image).softmax(1)[:, 1:2]


def to_onnx(model: nn.Module, path: str, fp16: bool, opset: int = DEFAULT_OPSET) -> None:
    """Write the ONNX graph; fp16 converts weights and compute, keeping float32 IO."""
    wrapper = ExportWrapper(model).eval().float()
    dummy = torch.rand(1, 3, IMAGE_HEIGHT, IMAGE_WIDTH)
    with tempfile.TemporaryDirectory() as tmp:
        raw = os.path.join(tmp, "fp32.onnx")
        torch.onnx.export(wrapper, (dummy,), raw, input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                          opset_version=opset, do_constant_folding=True, dynamo=False)
        proto = onnx.load(raw)
    onnx.save(to_fp16(proto) if fp16 else proto, path)


def to_fp16(proto: onnx.ModelProto) -> onnx.ModelProto:
    """FP16 weights and compute with float32 inputs and outputs (casts at the edges). The corner
    export uses it too: onnxruntime.transformers' converter leaves the graph unsorted (onnx.checker
    rejects it)."""
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        # It warns once per weight below FP16's smallest normal; clamping those is intended.
        warnings.simplefilter("ignore", UserWarning)
        return float16.convert_float_to_float16(proto, keep_io_types=True)


def predict_onnx(path: str, images: np.ndarray, threads: int = 0) -> np.ndarray:
    """images (N, 3, H, W) float32 -> (N, H, W) probabilities through onnxruntime CPU."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    return np.stack([sess.run([OUTPUT_NAME], {INPUT_NAME: x[None]})[0][0, 0] for x in images])


@torch.inference_mode()
def predict_torch(model: nn.Module, images: np.ndarray) -> np.ndarray:
    wrapper = ExportWrapper(model).eval().float()
    return np.stack([wrapper(torch.from_numpy(x[None]))[0, 0].numpy() for x in images])


def parity_gate(path: str, model: nn.Module, images: np.ndarray, precision: str) -> dict:
    """onnx.checker, then onnxruntime vs PyTorch FP32; raises GateError on failure."""
    try:
        onnx.checker.check_model(path, full_check=True)
    except Exception as e:
        raise GateError(f"onnx.checker rejected {path}: {e}") from e
    got, ref = predict_onnx(path, images), predict_torch(model, images)
    if got.shape != ref.shape or not np.isfinite(got).all():
        raise GateError(f"{path}: output shape {got.shape} / finite={np.isfinite(got).all()}, expected {ref.shape}")
    a, b = got >= 0.5, ref >= 0.5
    union = np.logical_or(a, b).sum()
    mask_iou = float(np.logical_and(a, b).sum() / union) if union else 1.0
    max_diff = float(np.abs(got - ref).max())
    report = {"mask_iou": mask_iou, "max_prob_diff": max_diff, "images": int(len(images)),
              "min_mask_iou": GATE_MIN_MASK_IOU, "max_prob_diff_allowed": GATE_MAX_PROB_DIFF[precision]}
    if mask_iou < GATE_MIN_MASK_IOU or max_diff > GATE_MAX_PROB_DIFF[precision]:
        raise GateError(f"{path} fails the parity gate: mask IoU {mask_iou:.4f} (>= {GATE_MIN_MASK_IOU} needed), "
                        f"max probability difference {max_diff:.4f} (<= {GATE_MAX_PROB_DIFF[precision]} needed)")
    return report


def gate_images(data_path: str, n: int = GATE_IMAGES, split: str = "test") -> np.ndarray:
    """(N, 3, 640, 480) float32 0..1 real images; the first N of the split that contain a card."""
    samples = [s for s in find_samples(data_path, split) if "negative" not in os.path.basename(s[0])] \
        or find_samples(data_path, split)
    imgs = [load_sample(*s)[0] for s in samples[:n]]
    return np.stack([im.transpose(2, 0, 1).astype(np.float32) / 255.0 for im in imgs])


def export_and_verify(model: nn.Module, path: str, fp16: bool, images: np.ndarray, opset: int = DEFAULT_OPSET,
                      post_export: Callable[[str], None] | None = None) -> dict:
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
        report = parity_gate(tmp, model, images, precision)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        for p in (tmp, path):   # an older file at `path` no longer matches this checkpoint
            if os.path.exists(p):
                os.remove(p)
        raise
    return {"file": os.path.basename(path), "precision": precision, "opset": opset, "gate": report}


def onnx_latencies(paths: list[str], runs: int = 20, warmup: int = 3, threads: int = 0) -> list[float]:
    """Median ms of onnxruntime CPU inference at 1x3x640x480 for each file.

    The files take turns run by run, so a machine that speeds up or slows down during the
    measurement (a shared VM, thermal limits) shifts every file alike and the ratios hold.
    """
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    sessions = [ort.InferenceSession(p, opts, providers=["CPUExecutionProvider"]) for p in paths]
    x = np.random.default_rng(0).random((1, 3, IMAGE_HEIGHT, IMAGE_WIDTH), dtype=np.float32)
    times: list[list[float]] = [[] for _ in paths]
    for i in range(warmup + runs):
        for sess, t in zip(sessions, times):
            t0 = time.perf_counter()
            sess.run(None, {sess.get_inputs()[0].name: x})   # any single-input model (corners too)
            if i >= warmup:
                t.append((time.perf_counter() - t0) * 1000)
    return [statistics.median(t) for t in times]


def machine_description() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} logical cores, {platform.system()}"


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def training_summary(ckpt: dict) -> dict:
    args = ckpt.get("args") or {}
    if ckpt.get("pruning"):
        # A prune.py checkpoint carries its source's history; what describes it is the pruning run.
        return {k: v for k, v in {
            "source_checkpoint": ckpt.get("source_checkpoint"), "lr": args.get("lr"),
            "batch_size": args.get("batch_size"), "size": args.get("size"),
            "max_train_images": args.get("max_train_images"), "amp_dtype": args.get("amp_dtype"),
            "pruning": ckpt["pruning"]}.items() if v is not None}
    history = ckpt.get("history") or []
    return {k: v for k, v in {
        "command": ckpt.get("command"), "hardware": ckpt.get("hardware"),
        "train_images": ckpt.get("train_images"), "val_images": ckpt.get("val_images"),
        "epochs_run": len(history), "best_epoch": ckpt.get("best_epoch"), "best_val_iou": ckpt.get("best_iou"),
        "train_time_min": round(sum(r.get("epoch_s", 0) for r in history) / 60, 1) if history else None,
        "lr": args.get("lr"), "batch_size": args.get("batch_size"), "size": args.get("size"),
        "low_res_epochs": args.get("low_res_epochs"), "pretrained_backbone": ckpt.get("pretrained_backbone"),
        "amp_dtype": args.get("amp_dtype"), "pruning": ckpt.get("pruning"),
    }.items() if v is not None}


def main(args: argparse.Namespace) -> dict:
    ckpt_path = resolve_path(args.checkpoint)
    out_dir = resolve_path(args.output_dir)
    data_path = resolve_path(args.data_path)
    try:
        model, ckpt = load_checkpoint_model(ckpt_path)
        images = gate_images(data_path, args.gate_images)
    except DataError as e:
        raise SystemExit(f"error: {e}") from None
    model = model.float().eval()
    # Both variants are staged and gated first, then moved in together: a failure leaves the
    # previous pair (and its .json) untouched, never a new FP16 file next to an old FP32 one.
    files, staged = [], []
    try:
        for fp16 in (True, False):
            path = os.path.join(out_dir, args.name + ("" if fp16 else "_fp32") + ".onnx")
            stage = os.path.join(out_dir, f".staged-{os.path.basename(path)}")
            info = export_and_verify(model, stage, fp16, images, args.opset)
            staged.append(stage)
            info["file"] = os.path.basename(path)
            logger.info("%s: passed the gate (mask IoU %.5f, max prob diff %.2e), %.2f MB", info["file"],
                        info["gate"]["mask_iou"], info["gate"]["max_prob_diff"], os.path.getsize(stage) / 1e6)
            files.append((path, info))
    except GateError as e:
        logger.error("%s", e)
        for stage in staged:
            os.remove(stage)
        raise SystemExit(1) from None
    for stage, (path, _) in zip(staged, files):
        os.replace(stage, path)

    # Measurements of the files themselves: latency side by side, then test-split metrics.
    from evaluate import evaluate_model

    meta = {"name": args.name, "kind": "segmentation", "checkpoint": os.path.basename(ckpt_path),
            "export_command": args.export_command or "python train/export.py " + " ".join(sys.argv[1:]),
            "machine": machine_description(), "onnxruntime": __import__("onnxruntime").__version__,
            "training": training_summary(ckpt), "files": []}
    latencies = onnx_latencies([path for path, _ in files], args.latency_runs)
    for (path, info), ms in zip(files, latencies):
        info.update(size_bytes=os.path.getsize(path), sha256=sha256(path), cpu_latency_ms=round(ms, 1),
                    latency_runs=args.latency_runs)
        meta["files"].append(info)
    if not args.skip_eval:
        eval_path = resolve_path(args.eval_data_path or args.data_path)
        for path, info in files:
            m = evaluate_model(path, eval_path, "test", quiet=True)
            info["test_metrics"] = {k: round(m[k], 5) for k in ("iou", "dice", "pixel_acc", "min_image_iou")} | \
                {"images": m["images"], "dataset": args.eval_dataset_note or eval_path}
            logger.info("%s on %s: IoU %.4f Dice %.4f acc %.4f", info["file"], eval_path, m["iou"], m["dice"],
                        m["pixel_acc"])
    with open(os.path.join(out_dir, args.name + ".json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    model_card.write_model_card(out_dir)
    return meta


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Export a segmentation checkpoint to FP16/FP32 ONNX", add_help=add_help)
    p.add_argument("checkpoint", help="train.py best.pt, or a prune.py checkpoint")
    p.add_argument("--name", default="card_segmentation", help="file base name, e.g. card_segmentation_pruned")
    p.add_argument("--output-dir", default=EXPORT_DIR)
    p.add_argument("--data-path", default=DEFAULT_DATASET, help="dataset whose test images feed the parity gate")
    p.add_argument("--eval-data-path", default=None, help="dataset for the model card's test metrics "
                   "(default: --data-path)")
    p.add_argument("--eval-dataset-note", default=None, help="how that dataset was made, for the model card")
    p.add_argument("--gate-images", type=int, default=GATE_IMAGES)
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--latency-runs", type=int, default=30)
    p.add_argument("--skip-eval", action="store_true", help="no test-split metrics (faster)")
    p.add_argument("--export-command", default=None, help=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    setup_logging()
    main(get_args_parser().parse_args())
