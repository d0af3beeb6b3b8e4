"""Export a corner checkpoint, with the corner refiner appended, to ONNX behind a parity gate.

    python train/export_corners.py train/runs/corners/yolo12n_pose/weights/best.pt
    python train/export_corners.py best.pt --refiner train/runs/corner_refiner/best.pt
    python train/export_corners.py best.pt --no-refine                      # the detector alone
    python train/export_corners.py best.pt --formats onnx,tflite,coreml     # mobile extras, if installed

Writes train/exported_models/card_corners.onnx, card_corners.json (what was measured) and
re-renders the model card. Graph contract (documented in the model card):
    input  "images":  float32 [1, 3, 640, 480], RGB, 0..1
    output "output0": float32 [1, 17, 6300], the detector's candidates, decoded by
                      pose/metrics.decode_tensor (one card: the best anchor's confidence, corners
                      averaged over the anchors that agree with it)
    output "corners": float32 [1, 4, 2], those corners refined (pose/refine.py), continuous px
    output "score":   float32 [1], the card's confidence
The detector is FP16 (weights and compute); the decoding and the refiner (--refiner, default the
committed checkpoints/card_corner_refiner.pt) are FP32 and appended to the same graph. The gate
runs onnx.checker, then onnxruntime CPU against PyTorch FP32 on real test images: the refined
corners and the decoded output0 must each agree within 1 px and the card found / not found alike.
A file that fails is never moved into place and the script exits non-zero.

tflite (LiteRT) and coreml go through Ultralytics' exporters with their default precision and
need their packages (`pip install litert-torch ai-edge-litert`, `pip install "coremltools>=9"`);
they hold the detector alone (no refiner) and are written next to the ONNX file without a gate
of ours.
"""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")

import argparse  # noqa: E402
import importlib.util  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402
import torch  # noqa: E402

import model_card  # noqa: E402
from common import DEFAULT_DATASET, EXPORT_DIR, IMAGE_HEIGHT, IMAGE_WIDTH, DataError, resolve_path, run_script  # noqa: E402,E501
from evaluate_corners import jsonable  # noqa: E402
from export import machine_description, onnx_latencies, sha256, to_fp16  # noqa: E402
from pose.data import (
    NUM_CORNERS,  # noqa: E402
    corner_samples,  # noqa: E402
)
from pose.metrics import DEFAULT_CONF  # noqa: E402
from pose.predict import (  # noqa: E402
    INPUT_NAME,
    RAW_OUTPUT,
    REFINED_OUTPUT,
    SCORE_OUTPUT,
    load_checked,
    load_pose_model,
    onnx_runner,
    torch_runner,
)
from pose.refine import DEFAULT_REFINER, DecodeAndRefine, load_refiner  # noqa: E402

logger = logging.getLogger(__name__)

# opset 17: every onnxruntime build we target runs it (web 1.22 WASM/WebGPU, Mobile, CPU/CUDA).
DEFAULT_OPSET = 17
GATE_MAX_CORNER_DIFF_PX = 1.0
GATE_IMAGES = 16
MIN_REFINER_OPSET = 16   # GridSample
# The detector's candidates at 640x480: one per cell of its stride-8, 16 and 32 grids.
NUM_ANCHORS = sum((IMAGE_HEIGHT // s) * (IMAGE_WIDTH // s) for s in (8, 16, 32))
# Ultralytics' name for each extra format, and the modules it needs (checked first: Ultralytics
# would try to pip-install them, which must not happen offline).
EXTRA_FORMATS = {"tflite": ("litert", ["litert_torch", "ai_edge_litert"], "pip install litert-torch ai-edge-litert"),
                 "coreml": ("coreml", ["coremltools"], 'pip install "coremltools>=9"')}


class GateError(Exception):
    """The exported file does not match PyTorch; the message says how."""


def ultralytics_export(checkpoint: str, fmt: str, out_dir: str, stem: str, **kwargs) -> str:
    """Runs Ultralytics' exporter on a copy of the checkpoint in a temporary folder (it writes next
    to its input) and moves the result to out_dir/<stem><suffix>; returns that path."""
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, stem + ".pt")
        shutil.copyfile(checkpoint, src)
        produced = load_pose_model(src).export(format=fmt, imgsz=[IMAGE_HEIGHT, IMAGE_WIDTH], batch=1,
                                               dynamic=False, nms=False, device="cpu", **kwargs)
        produced = str(produced)
        dst = os.path.join(out_dir, os.path.basename(produced))
        if os.path.isdir(dst):
            shutil.rmtree(dst)
        shutil.move(produced, dst)
    return dst


def gate_images(data_path: str, n: int) -> np.ndarray:
    """(n, 640, 480, 3) uint8 RGB test images with a card (the gate compares corners)."""
    samples = [p for p, c in corner_samples(data_path, "test") if c is not None][:n]
    if not samples:
        raise DataError(f"{data_path}: no test image with a card for the parity gate")
    return np.stack([load_checked(p) for p in samples])


def refine_stage_onnx(refiner, opset: int) -> onnx.ModelProto:
    """pose.refine.DecodeAndRefine as an FP32 ONNX graph: inputs `images` and `output0` (named as
    the detector's input and output, so appending it wires itself), outputs `corners`, `score`."""
    stage = DecodeAndRefine(refiner).float().eval()
    images = torch.zeros(1, 3, IMAGE_HEIGHT, IMAGE_WIDTH)
    output0 = torch.zeros(1, 5 + 3 * NUM_CORNERS, NUM_ANCHORS)
    output0[:, 2:5] = 1.0      # a valid box and score, so tracing sees the real path
    buf = io.BytesIO()
    torch.onnx.export(stage, (images, output0), buf, input_names=[INPUT_NAME, RAW_OUTPUT],
                      output_names=[REFINED_OUTPUT, SCORE_OUTPUT], opset_version=opset, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def append_refiner(detector: onnx.ModelProto, stage: onnx.ModelProto) -> onnx.ModelProto:
    """One graph: the detector's nodes, then the refine stage's (its tensors prefixed `refine/`),
    reading the detector's `images` input and `output0` output. `output0` stays an output, so
    code written against the detector alone keeps working."""
    stage = onnx.compose.add_prefix(stage, "refine/")
    rename = {"refine/" + n: n for n in (INPUT_NAME, RAW_OUTPUT, REFINED_OUTPUT, SCORE_OUTPUT)}
    for node in stage.graph.node:
        node.input[:] = [rename.get(x, x) for x in node.input]
        node.output[:] = [rename.get(x, x) for x in node.output]
    merged = onnx.ModelProto()
    merged.CopyFrom(detector)
    merged.graph.node.extend(stage.graph.node)
    merged.graph.initializer.extend(stage.graph.initializer)
    for out in stage.graph.output:
        out.name = rename[out.name]
        merged.graph.output.append(out)
    return merged


def parity_gate(onnx_path: str, model, images: np.ndarray, refiner=None) -> dict:
    """Corners of the ONNX file vs PyTorch FP32 on the same images: the refined output against the
    detector + refiner in PyTorch, and the decoded output0 against the detector alone."""
    onnx.checker.check_model(onnx.load(onnx_path), full_check=True)
    result = {"images": int(len(images)), "max_allowed_px": GATE_MAX_CORNER_DIFF_PX}
    pairs = [("", torch_runner(model), onnx_runner(onnx_path, refine=False))]
    if refiner is not None:
        pairs.insert(0, ("refined_", torch_runner(model, refiner), onnx_runner(onnx_path, refine=True)))
    failed = []
    for prefix, ref_run, out_run in pairs:
        (ref_k, ref_s), (out_k, out_s) = ref_run(images), out_run(images)
        ref_f, out_f = ref_s >= DEFAULT_CONF, out_s >= DEFAULT_CONF
        both = ref_f & out_f
        diff = float(np.linalg.norm(out_k[both] - ref_k[both], axis=-1).max()) if both.any() else 0.0
        mismatches = int((ref_f != out_f).sum())
        result[f"max_{prefix}corner_diff_px"] = round(diff, 4) if np.isfinite(diff) else None
        result[f"max_{prefix}score_diff"] = round(float(np.abs(out_s - ref_s).max()), 5)
        result[f"{prefix}found_mismatches"] = mismatches
        # NaN compares False with everything: a non-finite difference is a failure, not a pass.
        if mismatches or not np.isfinite(diff) or diff > GATE_MAX_CORNER_DIFF_PX:
            failed.append(RAW_OUTPUT if not prefix else REFINED_OUTPUT)
    if failed:
        raise GateError(f"{os.path.basename(onnx_path)} failed the parity gate on {', '.join(failed)}: {result}")
    return result


def refiner_summary(path: str, note: str | None = None) -> dict:
    """What the refiner checkpoint says about its training."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    a, h = ckpt.get("args") or {}, ckpt.get("history") or []
    keep = ("epochs", "batch_size", "lr", "jitter_px", "seed")
    return {"checkpoint": os.path.basename(path), "note": note, "epoch": ckpt.get("epoch"),
            "args": {k: a[k] for k in keep if k in a}, "val_mean_px": ckpt.get("val_mean_px"), "epochs_run": len(h),
            "train_minutes": round(sum(r.get("epoch_s", 0) for r in h) / 60, 1)}


def training_summary(ckpt_path: str, note: str | None = None) -> dict:
    """What the checkpoint says about its training (Ultralytics keeps train_args and the last metrics)."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    a = ckpt.get("train_args") or {}
    m = ckpt.get("train_metrics") or {}
    keep = ("epochs", "time", "batch", "imgsz", "optimizer", "lr0", "cos_lr", "warmup_epochs", "amp")
    return {"note": note, "args": {k: a[k] for k in keep if k in a},
            "val_corners": jsonable({k.split("/", 1)[1]: round(float(v), 4) for k, v in m.items()
                                     if k.startswith("corners/")}),
            "date": ckpt.get("date"), "ultralytics": ckpt.get("version")}


def main(args: argparse.Namespace) -> dict:
    ckpt_path, out_dir, data_path = resolve_path(args.checkpoint), resolve_path(args.output_dir), \
        resolve_path(args.data_path)
    formats = [f.strip() for f in args.formats.split(",") if f.strip()]
    unknown = sorted(set(formats) - {"onnx", *EXTRA_FORMATS})
    if unknown:
        raise DataError(f"--formats: unknown {unknown}; choose from onnx, {', '.join(EXTRA_FORMATS)}")
    for fmt in formats:
        if fmt in EXTRA_FORMATS:
            missing = [m for m in EXTRA_FORMATS[fmt][1] if importlib.util.find_spec(m) is None]
            if missing:
                raise DataError(f"--formats {fmt} needs {', '.join(missing)}: {EXTRA_FORMATS[fmt][2]} (optional "
                                "extras, not in requirements.txt)")
    if not args.no_refine and args.opset < MIN_REFINER_OPSET:
        raise DataError(f"--opset {args.opset}: the refiner needs GridSample, opset {MIN_REFINER_OPSET} or later "
                        "(or export the detector alone with --no-refine)")
    model = load_pose_model(ckpt_path).model.float().eval()
    refiner_path = None if args.no_refine else resolve_path(args.refiner)
    refiner = load_refiner(refiner_path) if refiner_path else None
    images = gate_images(data_path, args.gate_images)
    os.makedirs(out_dir, exist_ok=True)
    meta = {"name": args.name, "kind": "corners", "checkpoint": os.path.basename(ckpt_path),
            "export_command": args.export_command or "python train/export_corners.py " + " ".join(sys.argv[1:]),
            "machine": machine_description(), "onnxruntime": __import__("onnxruntime").__version__,
            "training": training_summary(ckpt_path, args.training_note),
            "refiner": refiner_summary(refiner_path, args.refiner_note) if refiner_path else None, "files": []}
    if "onnx" in formats:
        with tempfile.TemporaryDirectory(dir=out_dir, prefix=".staged-") as stage:
            # FP32 from Ultralytics (its graph, names and metadata), then our FP16 conversion.
            staged = ultralytics_export(ckpt_path, "onnx", stage, args.name, half=False, opset=args.opset,
                                        simplify=False)
            graph = to_fp16(onnx.load(staged))
            timed = [staged]
            if refiner is not None:   # FP32: 0.1 M parameters, and sub-pixel coordinates need FP32
                detector_only = os.path.join(stage, "detector_only.onnx")
                onnx.save(graph, detector_only)
                timed.append(detector_only)
                graph = append_refiner(graph, refine_stage_onnx(refiner, args.opset))
            onnx.save(graph, staged)
            try:
                gate = parity_gate(staged, model, images, refiner)
            except GateError as e:
                logger.error("%s", e)
                raise SystemExit(1) from None
            # Interleaved in one run, so the refiner's cost is measured against the detector alone.
            latencies = onnx_latencies(timed, args.latency_runs)
            path = os.path.join(out_dir, args.name + ".onnx")
            os.replace(staged, path)
        logger.info("%s: passed the gate (max corner difference %.3f px over %d images), %.2f MB",
                    os.path.basename(path), gate.get("max_refined_corner_diff_px", gate["max_corner_diff_px"]),
                    gate["images"], os.path.getsize(path) / 1e6)
        info = {"file": os.path.basename(path), "precision": "fp16", "opset": args.opset, "gate": gate,
                "size_bytes": os.path.getsize(path), "sha256": sha256(path),
                "cpu_latency_ms": round(latencies[0], 1), "latency_runs": args.latency_runs}
        if refiner is not None:
            info["detector_cpu_latency_ms"] = round(latencies[1], 1)
        if not args.skip_eval:
            from evaluate_corners import evaluate_corner_model
            eval_path = resolve_path(args.eval_data_path or args.data_path)
            # The file's own outputs; with a refiner inside, the detector's output0 alone as well.
            for key, refine in (("test_metrics", True), ("detector_test_metrics", False))[:2 if refiner else 1]:
                m, _ = evaluate_corner_model(path, eval_path, "test", quiet=True, refine=refine)
                info[key] = jsonable({k: (round(v, 4) if isinstance(v, float) else v) for k, v in m.items()
                                      if k not in ("model", "data_path", "split")}) | {
                    "dataset": args.eval_dataset_note or eval_path}
                logger.info("%s (%s) on %s: %.2f %% within 5 px, %.2f %% within 10 px, mean %.2f px", info["file"],
                            "refined" if refine else "detector alone", eval_path, m["pct_within_5px"],
                            m["pct_within_10px"], m["mean_px"])
        meta["files"].append(info)
        with open(os.path.join(out_dir, args.name + ".json"), "w") as f:
            json.dump(meta, f, indent=1)
            f.write("\n")
        model_card.write_model_card(out_dir)
    for fmt in formats:
        if fmt in EXTRA_FORMATS:
            # No precision argument: LiteRT rejects half (quantize=16); each format's default is its usual one.
            path = ultralytics_export(ckpt_path, EXTRA_FORMATS[fmt][0], out_dir, args.name)
            logger.info("%s -> %s (no parity gate: check it on the device)", fmt, path)
    return meta


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Export the corner model to ONNX (and optionally tflite/coreml)",
                                add_help=add_help)
    p.add_argument("checkpoint", help="train_corners.py weights/best.pt")
    p.add_argument("--name", default="card_corners")
    p.add_argument("--refiner", default=DEFAULT_REFINER, help="train_corner_refiner.py checkpoint built into the "
                   "ONNX graph (outputs `corners`, `score`)")
    p.add_argument("--no-refine", action="store_true", help="export the detector alone (output0 only)")
    p.add_argument("--output-dir", default=EXPORT_DIR)
    p.add_argument("--formats", default="onnx", help="comma-separated: onnx, tflite, coreml")
    p.add_argument("--data-path", default=DEFAULT_DATASET, help="dataset whose test images feed the parity gate")
    p.add_argument("--eval-data-path", default=None, help="dataset for the model card's metrics (default: --data-path)")
    p.add_argument("--eval-dataset-note", default=None, help="how that dataset was made, for the model card")
    p.add_argument("--training-note", default=None, help="how the checkpoint was trained, for the model card")
    p.add_argument("--refiner-note", default=None, help="how the refiner was trained, for the model card")
    p.add_argument("--gate-images", type=int, default=GATE_IMAGES)
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--latency-runs", type=int, default=30)
    p.add_argument("--skip-eval", action="store_true")
    p.add_argument("--export-command", default=None, help=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    run_script(main, get_args_parser)
