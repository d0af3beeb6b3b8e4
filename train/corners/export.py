"""Corner checkpoint (+ refiner) -> ONNX graphs behind a parity gate: the library under
export_corners.py.

Graph contract of card_corners.onnx (documented in the model card):
    input  "images":      float32 [1, 3, 640, 480], RGB, 0..1
    output "output0":     float32 [1, 17, 6300], the detector's candidates (corners/metrics.py)
    output "cards":       float32 [1, MAX_CARDS, 4, 2], every card found, best first, continuous px
                          (the detector's corners; card_corners_refiner.onnx refines them)
    output "card_scores": float32 [1, MAX_CARDS], their confidences, 0 in an empty slot
    output "corners":     float32 [1, 4, 2], the frame's card (the strong card nearest the centre)
                          refined (corners/refine.py), continuous px
    output "score":       float32 [1], its confidence; 0 when there is none or the quad is not a card
    outputs "visibility", "fallback": float32 [1, 4], diagnostics of `corners`
and of card_corners_refiner.onnx (FP32, the same refine stage on any quads of a frame):
    inputs  "images" as above, "quads": float32 [N, 4, 2] continuous px
    outputs "corners" [N, 4, 2], "valid" [N] (1: a card's shape, 0: not), "visibility", "fallback" [N, 4]
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile

import numpy as np
import onnx
import torch

from common import IMAGE_HEIGHT, IMAGE_WIDTH, DataError, atomic_torch_save, public_command, public_path
from corners.data import NUM_CORNERS, corner_samples
from corners.metrics import DEFAULT_CONF, central_index, decode_cards_tensor, jsonable, pick
from corners.predict import (
    CARD_SCORES_OUTPUT,
    CARDS_OUTPUT,
    FALLBACK_OUTPUT,
    INPUT_NAME,
    QUADS_INPUT,
    RAW_OUTPUT,
    REFINED_OUTPUT,
    SCORE_OUTPUT,
    VALID_OUTPUT,
    VISIBILITY_OUTPUT,
    load_checked,
    load_pose_model,
    onnx_runner,
    to_input,
    torch_runner,
)
from corners.refine import (
    OUTSIDE_MARGIN_PX,
    REFINE_STEPS,
    DecodeAndRefine,
    RefineQuads,
    finish_corners,
    refiner_geometry,
)
from onnx_utils import GateError, check_model, ort_session

# opset 17: every onnxruntime build we target runs it (web 1.22 WASM/WebGPU, Mobile, CPU/CUDA).
DEFAULT_OPSET = 17
GATE_MAX_CORNER_DIFF_PX = 1.0
# The appended stage is FP32 in both files: against PyTorch (float64 decoding) on the same output0 it
# agrees to float32 rounding, amplified a little where a corner sits on the fallback's ramp.
GATE_STAGE_DIFF_PX = 0.1
GATE_IMAGES = 16
MIN_REFINER_OPSET = 16   # GridSample
# The detector's candidates at 640x480: one per cell of its stride-8, 16 and 32 grids.
NUM_ANCHORS = sum((IMAGE_HEIGHT // s) * (IMAGE_WIDTH // s) for s in (8, 16, 32))


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


def gate_images(data_path: str, n: int = GATE_IMAGES, split: str = "test") -> np.ndarray:
    """(n, 640, 480, 3) uint8 RGB test images with a card (the gate compares corners)."""
    return np.stack([load_checked(p) for p, _ in gate_samples(data_path, n, split)])


def gate_samples(data_path: str, n: int = GATE_IMAGES, split: str = "test") -> list[tuple[str, np.ndarray]]:
    """The first n test images with a card and their (N, 4, 2) annotated cards."""
    samples = [(p, c) for p, c in corner_samples(data_path, split) if len(c)][:n]
    if not samples:
        raise DataError(f"{os.path.join(data_path, split)}: no image with annotated corners for the parity gate")
    return samples


STAGE_OUTPUTS = [REFINED_OUTPUT, SCORE_OUTPUT, VISIBILITY_OUTPUT, FALLBACK_OUTPUT, CARDS_OUTPUT, CARD_SCORES_OUTPUT]
REFINER_OUTPUTS = [REFINED_OUTPUT, VALID_OUTPUT, VISIBILITY_OUTPUT, FALLBACK_OUTPUT]


def refine_stage_onnx(refiner, opset: int) -> onnx.ModelProto:
    """corners.refine.DecodeAndRefine as an FP32 ONNX graph: inputs `images` and `output0` (named as
    the detector's input and output, so appending it wires itself), outputs STAGE_OUTPUTS."""
    stage = DecodeAndRefine(refiner).float().eval()
    images = torch.zeros(1, 3, IMAGE_HEIGHT, IMAGE_WIDTH)
    output0 = torch.zeros(1, 5 + 3 * NUM_CORNERS, NUM_ANCHORS)
    output0[:, 2:5] = 1.0      # a valid box and score, so tracing sees the real path
    buf = io.BytesIO()
    torch.onnx.export(stage, (images, output0), buf, input_names=[INPUT_NAME, RAW_OUTPUT],
                      output_names=STAGE_OUTPUTS, opset_version=opset, dynamo=False)
    return onnx.load_from_string(buf.getvalue())


def refiner_onnx(refiner, opset: int) -> onnx.ModelProto:
    """corners.refine.RefineQuads as an FP32 ONNX graph (card_corners_refiner.onnx): inputs `images`
    [1, 3, 640, 480] and `quads` [N, 4, 2], N free; outputs REFINER_OUTPUTS."""
    stage = RefineQuads(refiner).float().eval()
    images = torch.zeros(1, 3, IMAGE_HEIGHT, IMAGE_WIDTH)
    # Two quads: traced on the path where several quads share the one image.
    quads = torch.tensor([[[100.0, 100.0], [300.0, 100.0], [300.0, 380.0], [100.0, 380.0]]] * 2)
    buf = io.BytesIO()
    torch.onnx.export(stage, (images, quads), buf, input_names=[INPUT_NAME, QUADS_INPUT], output_names=REFINER_OUTPUTS,
                      dynamic_axes={QUADS_INPUT: {0: "cards"}, **{o: {0: "cards"} for o in REFINER_OUTPUTS}},
                      opset_version=opset, dynamo=False)
    model = onnx.load_from_string(buf.getvalue())
    # The tracer leaves the outputs' fixed axes symbolic ("Wherecorners_dim_2"); name their sizes.
    fixed = {REFINED_OUTPUT: [4, 2], VISIBILITY_OUTPUT: [4], FALLBACK_OUTPUT: [4]}
    for out in model.graph.output:
        for dim, size in zip(out.type.tensor_type.shape.dim[1:], fixed.get(out.name, [])):
            dim.dim_value = size
    return model


def refiner_gate(onnx_path: str, refiner, images: np.ndarray, quads: list[np.ndarray]) -> dict:
    """card_corners_refiner.onnx against RefineQuads in PyTorch (float64 crops' positions as the file
    computes them in float32) on images (n, 640, 480, 3) and per image quads (N, 4, 2) continuous px:
    the refined corners within GATE_STAGE_DIFF_PX and `valid` alike."""
    check_model(onnx_path)
    sess = ort_session(onnx_path)
    stage = RefineQuads(refiner).float().eval()
    worst, mismatches, tested = 0.0, 0, 0
    for image, q in zip(images, quads):
        if not len(q):
            continue
        x = to_input(image[None])
        corners, valid = sess.run([REFINED_OUTPUT, VALID_OUTPUT], {INPUT_NAME: x, QUADS_INPUT: q.astype(np.float32)})
        with torch.no_grad():
            ref, ref_valid, _, _ = stage(torch.from_numpy(x), torch.from_numpy(q.astype(np.float32)))
        worst = max(worst, float(np.abs(corners - ref.numpy()).max()))
        mismatches += int((valid != ref_valid.numpy()).sum())
        tested += len(q)
    result = {"quads": tested, "max_diff_px": round(worst, 5), "valid_mismatches": mismatches,
              "max_allowed_px": GATE_STAGE_DIFF_PX}
    if not tested or not np.isfinite(worst) or worst > GATE_STAGE_DIFF_PX or mismatches:
        raise GateError(f"{onnx_path} fails the parity gate: refined corners differ by up to {worst:.4f} px "
                        f"(<= {GATE_STAGE_DIFF_PX} needed), card shape judged differently on {mismatches} of "
                        f"{tested} quads")
    return result


def append_refiner(detector: onnx.ModelProto, stage: onnx.ModelProto) -> onnx.ModelProto:
    """One graph: the detector's nodes, then the refine stage's (its tensors prefixed `refine/`),
    reading the detector's `images` input and `output0` output. `output0` stays an output, so
    code written against the detector alone keeps working."""
    stage = onnx.compose.add_prefix(stage, "refine/")
    rename = {"refine/" + n: n for n in (INPUT_NAME, RAW_OUTPUT, *STAGE_OUTPUTS)}
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


def parity_gate(onnx_path: str, model, images: np.ndarray, refiner=None, precision: str = "fp32") -> dict:
    """The ONNX file vs PyTorch FP32 on the same images.

    Gated for every file: the decoded `output0` against the detector in PyTorch (within 1 px, card
    found alike), and the appended refine stage against PyTorch's finish_corners applied to the
    file's own output0 (within GATE_STAGE_DIFF_PX: the stage is FP32, so this is float rounding).
    End to end, the refined `corners` against detector + refiner in PyTorch: gated within 1 px for an FP32
    file; for the FP16 detector only reported, since its rounding (a fraction of a pixel in
    output0) moves the refiner's crops, and where a corner's visibility sits on the fallback's ramp
    the corner moves by that share of the distance between its two guesses."""
    check_model(onnx_path)
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
        gated = not prefix or precision == "fp32"
        # NaN compares False with everything: a non-finite difference is a failure, not a pass.
        if gated and (mismatches or not np.isfinite(diff) or diff > GATE_MAX_CORNER_DIFF_PX):
            failed.append(RAW_OUTPUT if not prefix else REFINED_OUTPUT)
    if refiner is not None:
        stage = stage_difference(onnx_path, refiner, images)
        result["max_stage_diff_px"] = round(stage, 5) if np.isfinite(stage) else None
        if not np.isfinite(stage) or stage > GATE_STAGE_DIFF_PX:
            failed.append(f"{REFINED_OUTPUT} (refine stage, {stage:.4f} px)")
    if failed:
        raise GateError(f"{onnx_path} fails the parity gate on {', '.join(failed)}: max corner difference "
                        f"{result['max_corner_diff_px']} px (refined: {result.get('max_refined_corner_diff_px')} px, "
                        f"<= {GATE_MAX_CORNER_DIFF_PX} needed), card found in one and not the other on "
                        f"{result['found_mismatches'] + result.get('refined_found_mismatches', 0)} image(s)")
    return result


def stage_difference(onnx_path: str, refiner, images: np.ndarray) -> float:
    """Max |outputs - PyTorch's stage on the file's own output0| px over images: the refined
    `corners`, every card's `cards` (a score flip, in `score` or `card_scores`, fails too)."""
    sess = ort_session(onnx_path)
    worst = 0.0
    for i in range(len(images)):
        x = to_input(images[i:i + 1])
        output0, corners, score, cards, scores = sess.run([RAW_OUTPUT, REFINED_OUTPUT, SCORE_OUTPUT, CARDS_OUTPUT,
                                                           CARD_SCORES_OUTPUT], {INPUT_NAME: x})
        raw_cards, raw_scores = decode_cards_tensor(torch.from_numpy(output0.astype(np.float64)))
        raw, best = pick(raw_cards, raw_scores, central_index(raw_cards, raw_scores))
        with torch.no_grad():
            expected, expected_score, _, _ = finish_corners(refiner, torch.from_numpy(x), raw, best)
        worst = max(worst, float(np.abs(corners - expected.numpy()).max()),
                    float(np.abs(cards - raw_cards.numpy()).max()),
                    1000.0 * float(np.abs(score - expected_score.numpy()).max()),
                    1000.0 * float(np.abs(scores - raw_scores.numpy()).max()))
    return worst


def public_metadata(proto: onnx.ModelProto) -> onnx.ModelProto:
    """The graph's metadata (Ultralytics writes the training data's path into its description) with
    public paths only (common.public_command)."""
    for prop in proto.metadata_props:
        prop.value = public_command(prop.value)
    return proto


def release_checkpoints(detector: str, refiner: str | None, out_dir: str) -> list[str]:
    """Copies of the detector (Ultralytics) and refiner checkpoints behind an export, as the repository
    ships them: the recorded training options keep paths inside the repository and names elsewhere
    (common.public_path), and the detector carries no optimizer state. Written as
    out_dir/card_corners.pt and card_corner_refiner.pt; returns their paths."""
    written = []
    ckpt = torch.load(detector, map_location="cpu", weights_only=False)
    for key in ("optimizer", "scaler"):
        ckpt[key] = None
    if isinstance(ckpt.get("train_args"), dict):
        ckpt["train_args"] = {k: public_path(v) if isinstance(v, str) else v for k, v in ckpt["train_args"].items()}
    for key in ("model", "ema"):
        model = ckpt.get(key)
        if model is not None and isinstance(getattr(model, "args", None), dict):
            model.args = {k: public_path(v) if isinstance(v, str) else v for k, v in model.args.items()}
    written.append(os.path.join(out_dir, "card_corners.pt"))
    atomic_torch_save(ckpt, written[-1])
    if refiner:
        ckpt = torch.load(refiner, map_location="cpu", weights_only=True)
        ckpt["args"] = {k: public_path(v) if isinstance(v, str) else v for k, v in (ckpt.get("args") or {}).items()}
        for key in ("optimizer", "scheduler", "scaler"):
            ckpt.pop(key, None)
        written.append(os.path.join(out_dir, "card_corner_refiner.pt"))
        atomic_torch_save(ckpt, written[-1])
    return written


def refiner_summary(path: str, note: str | None = None) -> dict:
    """What the refiner checkpoint says about its training."""
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    a, h = ckpt.get("args") or {}, ckpt.get("history") or []
    keep = ("epochs", "batch_size", "lr", "jitter_px", "seed")
    # The refinement settings the graph was built with, so the model card reads them from here.
    return {"checkpoint": os.path.basename(path), "note": note, "epoch": ckpt.get("epoch"),
            "refine_steps": REFINE_STEPS, "outside_margin_px": OUTSIDE_MARGIN_PX, **refiner_geometry(),
            "args": {k: a[k] for k in keep if k in a}, "val_mean_px": ckpt.get("val_mean_px"), "epochs_run": len(h),
            "train_minutes": round(sum(r.get("epoch_s", 0) for r in h) / 60, 1)}


def detector_summary(ckpt_path: str, note: str | None = None) -> dict:
    """What the checkpoint says about its training (Ultralytics keeps train_args and the last metrics)."""
    ckpt = torch.load(ckpt_path, map_location="cpu", weights_only=False)
    a = ckpt.get("train_args") or {}
    m = ckpt.get("train_metrics") or {}
    keep = ("epochs", "time", "batch", "imgsz", "optimizer", "lr0", "cos_lr", "warmup_epochs", "amp")
    return {"note": note, "args": {k: a[k] for k in keep if k in a},
            "val_corners": jsonable({k.split("/", 1)[1]: round(float(v), 4) for k, v in m.items()
                                     if k.startswith("corners/")}),
            "date": ckpt.get("date"), "ultralytics": ckpt.get("version")}
