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
    output "corners": float32 [1, 4, 2], those corners refined, a hidden one placed where its sides
                      meet (corners/refine.finish_corners), continuous px
    output "score":   float32 [1], the card's confidence; 0 when the quad is not a card
    outputs "visibility", "fallback": float32 [1, 4], diagnostics (model card)
Two files: <name>.onnx with the detector in FP16 (weights and compute) and <name>_fp32.onnx in
FP32; the decoding and the refine stage (--refiner, default the committed
checkpoints/card_corner_refiner.pt) are FP32 and appended to both. The gate (corners/export.py
parity_gate) runs onnx.checker, then onnxruntime CPU against PyTorch FP32 on real test images: the
decoded output0 within 1 px and the card found / not found alike, the refine stage on the file's
own output0 within 0.1 px, and for the FP32 file the refined corners end to end within 1 px. A
file that fails is never moved into place (neither is its twin) and the script exits non-zero.

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
import shlex  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import onnx  # noqa: E402

import model_card  # noqa: E402
from common import (  # noqa: E402
    DEFAULT_DATASET,
    EXPORT_DIR,
    DataError,
    add_comparison_args,
    comparison_args,
    public_command,
    public_path,
    resolve_path,
    run_script,
)
from corners.export import (  # noqa: E402
    DEFAULT_OPSET,
    GATE_IMAGES,
    MIN_REFINER_OPSET,
    append_refiner,
    detector_summary,
    gate_images,
    gate_samples,
    parity_gate,
    public_metadata,
    refine_stage_onnx,
    refiner_gate,
    refiner_onnx,
    refiner_summary,
    release_checkpoints,
    ultralytics_export,
)
from corners.metrics import false_alarms, jsonable  # noqa: E402
from corners.predict import load_pose_model, torch_runner  # noqa: E402
from corners.refine import DEFAULT_REFINER, load_refiner  # noqa: E402
from onnx_utils import (  # noqa: E402
    machine_description,
    onnx_latencies,
    onnxruntime_version,
    ort_session,
    sha256,
    to_fp16,
)

logger = logging.getLogger(__name__)

# Ultralytics' name for each extra format, and the modules it needs (checked first: Ultralytics
# would try to pip-install them, which must not happen offline).
EXTRA_FORMATS = {"tflite": ("litert", ["litert_torch", "ai_edge_litert"], "pip install litert-torch ai-edge-litert"),
                 "coreml": ("coreml", ["coremltools"], 'pip install "coremltools>=9"')}



PRECISIONS = (("fp16", ""), ("fp32", "_fp32"))   # (precision, file suffix): the FP16 file and its FP32 twin


def export_onnx_pair(args: argparse.Namespace, ckpt_path: str, out_dir: str, model, refiner, images,
                     data_path: str) -> tuple[list[dict], dict | None]:
    """card_corners.onnx (FP16 detector) and card_corners_fp32.onnx (FP32 detector, for WebGPU
    without shader-f16 and for WASM, where FP16 is slower), the refine stage (FP32: 0.1 M
    parameters, and sub-pixel coordinates need FP32) appended to both, and with a refiner the same
    stage alone as <name>_refiner.onnx (any quads of a frame refined). All are gated before any is
    moved into place, then timed (the pair in one interleaved run with the detector alone); returns
    the pair's records and the refiner graph's (None without a refiner)."""
    files = []
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".staged-") as stage:
        # FP32 from Ultralytics (its graph, names and metadata), then our FP16 conversion.
        exported = ultralytics_export(ckpt_path, "onnx", stage, "ultralytics", half=False, opset=args.opset,
                                      simplify=False)
        timed = []
        for precision, suffix in PRECISIONS:
            detector = public_metadata(onnx.load(exported))
            detector = to_fp16(detector) if precision == "fp16" else detector
            staged = os.path.join(stage, args.name + suffix + ".onnx")
            if refiner is not None:
                detector_only = os.path.join(stage, f"detector_only{suffix}.onnx")
                onnx.save(detector, detector_only)
                onnx.save(append_refiner(detector, refine_stage_onnx(refiner, args.opset)), staged)
            else:
                onnx.save(detector, staged)
            gate = parity_gate(staged, model, images, refiner, precision)   # a GateError leaves nothing behind
            logger.info("%s: passed the gate (max corner difference %.3f px over %d images), %.2f MB",
                        os.path.basename(staged), gate.get("max_refined_corner_diff_px", gate["max_corner_diff_px"]),
                        gate["images"], os.path.getsize(staged) / 1e6)
            files.append({"file": os.path.basename(staged), "precision": precision, "opset": args.opset,
                          "gate": gate})
            timed += [staged] + ([detector_only] if refiner is not None else [])
        refiner_info = None
        if refiner is not None:
            staged = os.path.join(stage, refiner_name(args.name))
            onnx.save(refiner_onnx(refiner, args.opset), staged)
            # The quads it is gated on: every card the detector finds on the gate images, and every
            # annotated card 3 px off (so there is something to refine even where the detector finds none).
            run = torch_runner(model)
            run(images)
            cards, scores = run.last_cards
            truth = [c for _, c in gate_samples(data_path, args.gate_images)]
            quads = [np.concatenate([c[s > 0] + 0.5, t + 3.5]) for c, s, t in zip(cards, scores, truth)]
            gate = refiner_gate(staged, refiner, images, quads)
            logger.info("%s: passed the gate (max corner difference %.4f px over %d quads)", os.path.basename(staged),
                        gate["max_diff_px"], gate["quads"])
            refiner_info = {"file": os.path.basename(staged), "precision": "fp32", "opset": args.opset, "gate": gate}
        # Interleaved in one run, so the refine stage's cost is measured against the detector alone.
        latencies = iter(onnx_latencies(timed, args.latency_runs))
        for info in files + ([refiner_info] if refiner_info else []):
            path = os.path.join(out_dir, info["file"])
            os.replace(os.path.join(stage, info["file"]), path)
            info.update(size_bytes=os.path.getsize(path), sha256=sha256(path), latency_runs=args.latency_runs)
            if info is refiner_info:      # the refiner graph: timed on 1 and 9 quads
                info["cpu_latency_ms"] = {str(n): round(t, 1) for n, t in refiner_latencies(path, args.latency_runs)}
                continue
            info["cpu_latency_ms"] = round(next(latencies), 1)
            if refiner is not None:
                info["detector_cpu_latency_ms"] = round(next(latencies), 1)
    return files, refiner_info


def refiner_name(name: str) -> str:
    """The refiner graph's file next to <name>.onnx (corners/predict.refiner_file finds it)."""
    return f"{name}_refiner.onnx"


def refiner_latencies(path: str, runs: int, counts: tuple[int, ...] = (1, 9)) -> list[tuple[int, float]]:
    """Median ms of card_corners_refiner.onnx on 1 and 9 quads (a binder page), in turns."""
    sess = ort_session(path)
    x = np.random.default_rng(0).random((1, 3, 640, 480), dtype=np.float32)
    quad = np.array([[120.0, 160.0], [360.0, 160.0], [360.0, 480.0], [120.0, 480.0]], np.float32)
    times = {n: [] for n in counts}
    for i in range(3 + runs):
        for n in counts:
            t0 = time.perf_counter()
            sess.run(None, {"images": x, "quads": np.repeat(quad[None], n, 0)})
            if i >= 3:
                times[n].append((time.perf_counter() - t0) * 1000)
    return [(n, float(np.median(times[n]))) for n in counts]


def _rounded(m: dict) -> dict:
    return jsonable({k: _rounded(v) if isinstance(v, dict) else round(v, 4) if isinstance(v, float) else v
                     for k, v in m.items() if k not in ("model", "data_path", "split")})


def evaluate_files(meta: dict, out_dir: str, refined: bool, eval_path: str, eval_note: str | None,
                   extra: list[tuple[str, str]], baseline: str | None, notes: dict[str, str],
                   seg_model: str | None = None) -> None:
    """The files' accuracy: each file's `corners` on the test split (and the detector alone for the
    FP16 file); then every named split (--extra-eval) for the FP16 file refined and not, its FP32
    twin, and the --baseline file, all in this one command. On a split with several cards per frame
    the refined files also get `multi_ok`: the cards scan.py reports `ok` with `seg_model`'s mask."""
    from evaluate_corners import evaluate_corner_model

    for i, info in enumerate(meta["files"]):
        path = os.path.join(out_dir, info["file"])
        # The file's own outputs; with a refiner inside, the detector's output0 alone as well.
        for key, refine in (("test_metrics", True), ("detector_test_metrics", False))[:2 if refined and i == 0 else 1]:
            m, _ = evaluate_corner_model(path, eval_path, "test", quiet=True, refine=refine)
            info[key] = _rounded(m) | {"dataset": eval_note or public_path(eval_path)}
            logger.info("%s (%s) on %s: %.2f %% within 5 px, %.2f %% within 10 px, mean %.2f px", info["file"],
                        "refined" if refine else "detector alone", eval_path, m["pct_within_5px"],
                        m["pct_within_10px"], m["mean_px"])
    if not (extra or baseline):
        return
    meta["extra_eval"] = {name: public_path(path) for name, path in extra}
    meta["extra_eval_notes"] = notes
    runs = [(os.path.join(out_dir, f["file"]), f, True) for f in meta["files"]]
    if refined:
        runs.insert(1, (os.path.join(out_dir, meta["files"][0]["file"]), meta["files"][0], False))
    if baseline:
        meta["baseline"] = {"file": os.path.basename(baseline), "sha256": sha256(baseline)}
        runs.append((baseline, meta["baseline"], True))
    splits = [("test", eval_path)] + extra
    for path, info, refine in runs:
        key = "extra_metrics" if refine else "detector_extra_metrics"
        for name, data in splits:
            if name == "test" and refine and "test_metrics" in info:     # scored above already
                m = info["test_metrics"]
            elif name == "test" and not refine and "detector_test_metrics" in info:
                m = info["detector_test_metrics"]
            else:
                m = _rounded(evaluate_corner_model(path, data, "test", quiet=True, refine=refine)[0])
            if m.get("multi") and refine and seg_model and path.endswith(".onnx"):
                m = m | {"multi_ok": _rounded(evaluate_corner_model(path, data, "test", quiet=True,
                                                                   seg_model=seg_model)[0])["multi"]}
            info.setdefault(key, {})[name] = {k: m.get(k) for k in EXTRA_KEYS if k in m}
            logger.info("%s%s on %s: %s", os.path.basename(path), "" if refine else " (detector)", name,
                        f"{m['pct_within_5px']:.2f} % within 5 px" if m["images"] else false_alarms(m))


# What the model card's split table shows per file and split.
EXTRA_KEYS = ("images", "corners", "missed_cards", "pct_within_5px", "pct_within_10px", "pct_within_20px",
              "hidden_corners", "hidden_pct_within_5px", "hidden_pct_within_10px", "hidden_pct_within_20px",
              "fallback_pct", "fallback_pct_hidden", "fallback_pct_visible", "negative_images", "false_positive_pct",
              "multi", "multi_ok")


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
    extra, baseline, notes = comparison_args(args)
    # Every file option is checked before anything is exported: a typo must not leave new models
    # beside the old card_corners.json and model card.
    seg_model = resolve_path(args.seg_model) if args.seg_model else None
    if seg_model and not os.path.isfile(seg_model):
        raise DataError(f"--seg-model {seg_model}: model file not found")
    release_dir = resolve_path(args.release) if args.release else None
    if release_dir and os.path.exists(release_dir) and not os.path.isdir(release_dir):
        raise DataError(f"--release {release_dir}: not a folder")
    model = load_pose_model(ckpt_path).model.float().eval()
    refiner_path = None if args.no_refine else resolve_path(args.refiner)
    refiner = load_refiner(refiner_path) if refiner_path else None
    images = gate_images(data_path, args.gate_images)
    os.makedirs(out_dir, exist_ok=True)
    meta = {"name": args.name, "kind": "corners", "checkpoint": os.path.basename(ckpt_path),
            "export_command": public_command(args.export_command or "python train/export_corners.py "
                                             + shlex.join(sys.argv[1:])),
            "machine": machine_description(), "onnxruntime": onnxruntime_version(),
            "training": detector_summary(ckpt_path, args.training_note),
            "refiner": refiner_summary(refiner_path, args.refiner_note) if refiner_path else None, "files": []}
    if "onnx" in formats:
        meta["files"], meta["refiner_file"] = export_onnx_pair(args, ckpt_path, out_dir, model, refiner, images,
                                                               data_path)
        if not args.skip_eval:
            evaluate_files(meta, out_dir, refiner is not None, resolve_path(args.eval_data_path or args.data_path),
                           args.eval_dataset_note, extra, baseline, notes, seg_model)
            meta["seg_model"] = os.path.basename(seg_model) if seg_model else None
        if release_dir:
            os.makedirs(release_dir, exist_ok=True)
            for path in release_checkpoints(ckpt_path, refiner_path, release_dir):
                logger.info("release checkpoint -> %s", path)
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
    p.add_argument("--release", default=None, metavar="DIR", help="also write the detector and refiner checkpoints "
                   "behind the files into DIR (card_corners.pt, card_corner_refiner.pt), without the paths of the "
                   "machine they were trained on: train/checkpoints for a release")
    p.add_argument("--formats", default="onnx", help="comma-separated: onnx, tflite, coreml")
    p.add_argument("--data-path", default=DEFAULT_DATASET, help="dataset whose test images feed the parity gate")
    p.add_argument("--eval-data-path", default=None, help="dataset for the model card's metrics (default: --data-path)")
    p.add_argument("--eval-dataset-note", default=None, help="how that dataset was made, for the model card")
    p.add_argument("--training-note", default=None, help="how the checkpoint was trained, for the model card")
    p.add_argument("--refiner-note", default=None, help="how the refiner was trained, for the model card")
    add_comparison_args(p, "card_corners")
    p.add_argument("--seg-model", default=None, help="segmentation .onnx whose mask checks the cards on multi-card "
                   "splits, as scan.py reports them (e.g. train/exported_models/card_segmentation_fp32.onnx)")
    p.add_argument("--gate-images", type=int, default=GATE_IMAGES)
    p.add_argument("--opset", type=int, default=DEFAULT_OPSET)
    p.add_argument("--latency-runs", type=int, default=30)
    p.add_argument("--skip-eval", action="store_true")
    p.add_argument("--export-command", default=None, help=argparse.SUPPRESS)
    return p


if __name__ == "__main__":
    run_script(main, get_args_parser)
