"""Export a segmentation checkpoint to ONNX (FP16 + FP32 variants) behind a parity gate.

    python train/export.py train/runs/segmentation/best.pt
    python train/export.py pruned.pt --name card_segmentation_pruned     # pruned checkpoints too

Writes train/exported_models/<name>.onnx (FP16 weights and compute, float32 input/output),
<name>_fp32.onnx, <name>.json (what was measured) and regenerates the model card
train/exported_models/README.md from every <name>.json there. The graph contract and the gate
are in segmentation/export.py; a file that fails the gate is deleted and the script exits 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import sys

import model_card
from common import (
    DEFAULT_DATASET,
    EXPORT_DIR,
    add_comparison_args,
    comparison_args,
    public_command,
    public_path,
    resolve_path,
    run_script,
)
from onnx_utils import machine_description, onnx_latencies, onnxruntime_version, sha256
from segmentation.export import (
    DEFAULT_OPSET,
    GATE_IMAGES,
    checkpoint_summary,
    export_and_verify,
    gate_images,
    gate_reference,
)
from segmentation.model import load_checkpoint_model

logger = logging.getLogger(__name__)
# Digits kept for IoU figures in the JSON: two more than the 4 the model card and the README print, so a
# figure is rarely rounded twice for display (0.932147 kept to 5 digits, 0.93215, printed 0.9322, not 0.9321).
METRIC_DIGITS = 6


def main(args: argparse.Namespace) -> dict:
    ckpt_path = resolve_path(args.checkpoint)
    out_dir = resolve_path(args.output_dir)
    data_path = resolve_path(args.data_path)
    extra, baseline, notes = comparison_args(args)
    model, ckpt = load_checkpoint_model(ckpt_path)
    images = gate_images(data_path, args.gate_images)
    model = model.float().eval()
    reference = gate_reference(model, images)   # the float64 pass, once for both files
    # Both variants are staged and gated first, then moved in together: a failure leaves the
    # previous pair (and its .json) untouched, never a new FP16 file next to an old FP32 one.
    files, staged = [], []
    try:
        for fp16 in (True, False):
            path = os.path.join(out_dir, args.name + ("" if fp16 else "_fp32") + ".onnx")
            stage = os.path.join(out_dir, f".staged-{os.path.basename(path)}")
            info = export_and_verify(model, stage, fp16, images, args.opset, reference=reference)
            staged.append(stage)
            info["file"] = os.path.basename(path)
            logger.info("%s: passed the gate (mask IoU %.5f, max prob diff %.2e), %.2f MB", info["file"],
                        info["gate"]["mask_iou"], info["gate"]["max_prob_diff"], os.path.getsize(stage) / 1e6)
            files.append((path, info))
    except BaseException:
        for stage in staged:
            os.remove(stage)
        raise
    for stage, (path, _) in zip(staged, files):
        os.replace(stage, path)

    # Measurements of the files themselves: latency side by side, then test-split metrics.
    from segmentation.evaluation import evaluate_model

    meta = {"name": args.name, "kind": "segmentation", "checkpoint": os.path.basename(ckpt_path),
            "export_command": public_command(args.export_command
                                             or "python train/export.py " + shlex.join(sys.argv[1:])),
            "machine": machine_description(), "onnxruntime": onnxruntime_version(),
            "training": checkpoint_summary(ckpt) | ({"note": args.training_note} if args.training_note else {}),
            "files": []}
    latencies = onnx_latencies([path for path, _ in files], args.latency_runs)
    for (path, info), ms in zip(files, latencies):
        info.update(size_bytes=os.path.getsize(path), sha256=sha256(path), cpu_latency_ms=round(ms, 1),
                    latency_runs=args.latency_runs)
        meta["files"].append(info)
    if not args.skip_eval:
        eval_path = resolve_path(args.eval_data_path or args.data_path)
        for path, info in files:
            m = evaluate_model(path, eval_path, "test", quiet=True)
            info["test_metrics"] = {k: round(m[k], METRIC_DIGITS) for k in ("iou", "dice", "pixel_acc",
                                                                            "min_image_iou")}
            info["test_metrics"] |= {"images": m["images"], "dataset": args.eval_dataset_note or public_path(eval_path)}
            logger.info("%s on %s: IoU %.4f Dice %.4f acc %.4f", info["file"], eval_path, m["iou"], m["dice"],
                        m["pixel_acc"])
    if extra or baseline:
        # Every file (and the baseline, in this same command) on every named test split.
        meta["extra_eval"] = {name: public_path(path) for name, path in extra}
        meta["extra_eval_notes"] = notes
        scored = [(path, info) for path, info in files] + ([(baseline, meta.setdefault("baseline", {
            "file": os.path.basename(baseline), "sha256": sha256(baseline)}))] if baseline else [])
        splits = ([("test", resolve_path(args.eval_data_path or args.data_path))] if baseline else []) + extra
        for path, info in scored:
            for name, data in splits:
                if name == "test" and "test_metrics" in info:   # scored above already
                    m = info["test_metrics"]
                else:
                    m = evaluate_model(path, data, "test", quiet=True)
                info.setdefault("extra_metrics", {})[name] = {"iou": round(m["iou"], METRIC_DIGITS),
                                                              "images": m["images"]}
                logger.info("%s on %s (%s): IoU %.4f", os.path.basename(path), name, data, m["iou"])
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
    p.add_argument("--training-note", default=None, help="how the checkpoint was trained (e.g. a chain of runs), "
                   "for the model card")
    p.add_argument("--gate-images", type=int, default=GATE_IMAGES)
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--latency-runs", type=int, default=30)
    p.add_argument("--skip-eval", action="store_true", help="no test-split metrics (faster)")
    add_comparison_args(p, "segmentation")
    p.add_argument("--export-command", default=None, help=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    run_script(main, get_args_parser)
