"""Export a corner checkpoint, with the corner refiner appended, to ONNX behind a parity gate.

    python train/export_corners.py train/runs/corners/yolo12n_pose/weights/best.pt
    python train/export_corners.py best.pt --refiner train/runs/corner_refiner/best.pt
    python train/export_corners.py best.pt --no-refine                      # the detector alone
    python train/export_corners.py best.pt --formats onnx,tflite,coreml     # mobile extras, if installed

Writes train/exported_models/card_corners.onnx, card_corners.json (what was measured) and
re-renders the model card. Graph contract (documented in the model card):
    input  "images":  float32 [1, 3, 640, 480], RGB, 0..1
    output "output0": float32 [1, 17, 6300], the detector's candidates, decoded by
                      corners/metrics.decode_tensor (one card: the best anchor's confidence, corners
                      averaged over the anchors that agree with it)
    output "corners": float32 [1, 4, 2], those corners refined (corners/refine.py), continuous px
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
import json  # noqa: E402
import logging  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402

import onnx  # noqa: E402

import model_card  # noqa: E402
from common import DEFAULT_DATASET, EXPORT_DIR, DataError, resolve_path, run_script  # noqa: E402
from corners.export import (  # noqa: E402
    DEFAULT_OPSET,
    GATE_IMAGES,
    MIN_REFINER_OPSET,
    append_refiner,
    detector_summary,
    gate_images,
    parity_gate,
    refine_stage_onnx,
    refiner_summary,
    ultralytics_export,
)
from corners.metrics import jsonable  # noqa: E402
from corners.predict import load_pose_model  # noqa: E402
from corners.refine import DEFAULT_REFINER, load_refiner  # noqa: E402
from onnx_utils import machine_description, onnx_latencies, onnxruntime_version, sha256, to_fp16  # noqa: E402

logger = logging.getLogger(__name__)

# Ultralytics' name for each extra format, and the modules it needs (checked first: Ultralytics
# would try to pip-install them, which must not happen offline).
EXTRA_FORMATS = {"tflite": ("litert", ["litert_torch", "ai_edge_litert"], "pip install litert-torch ai-edge-litert"),
                 "coreml": ("coreml", ["coremltools"], 'pip install "coremltools>=9"')}



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
            "machine": machine_description(), "onnxruntime": onnxruntime_version(),
            "training": detector_summary(ckpt_path, args.training_note),
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
            gate = parity_gate(staged, model, images, refiner)   # a GateError leaves nothing behind
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
