"""Run a corner model (PyTorch module or ONNX file) over a split and score it.

Used by the trainer every epoch (on the EMA weights), by evaluate_corners.py and by the export
parity gate, so the number that stops training is the number the evaluation reports.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from common import IMAGE_HEIGHT, IMAGE_WIDTH, DataError
from corners.data import NUM_CORNERS, in_frame
from corners.metrics import DEFAULT_CONF, corner_errors, decode_tensor, summarize
from corners.refine import CornerRefiner, finish_corners
from dataset import read_image
from onnx_utils import ort_session

logger = logging.getLogger(__name__)

# card_corners.onnx's outputs (train/exported_models/README.md): the detector's raw candidates,
# and the decoded, refined corners (continuous px) with the card's confidence.
INPUT_NAME = "images"
RAW_OUTPUT, REFINED_OUTPUT, SCORE_OUTPUT = "output0", "corners", "score"
# Diagnostics of the refine stage (corners/refine.finish_corners): per corner, the probability that
# it is in sight, and the weight (0..1) of its sides' meeting point in it.
VISIBILITY_OUTPUT, FALLBACK_OUTPUT = "visibility", "fallback"

# (B, 640, 480, 3) uint8 RGB -> corners (B, K, 2) in pixel-centre coordinates, card confidence (B,);
# the function's `refined` attribute says whether the corners went through the refiner, and after a
# refined call its `last_fallback` attribute holds (B, K) the weight of the sides' meeting point in
# each corner (None for a file without that output).
Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def to_input(images: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float32 0..1: the model's (and the ONNX file's) input."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def torch_runner(model: torch.nn.Module, refiner: CornerRefiner | None = None) -> Runner:
    """An Ultralytics PoseModel in eval mode (its own dtype and device, FP16 EMA on CUDA included),
    decoded, then refined when a refiner (on the same device) is given."""
    param = next(model.parameters())

    @torch.no_grad()
    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(to_input(images)).to(param.device)
        out = model(x.to(param.dtype))
        out = out[0] if isinstance(out, (tuple, list)) else out
        corners, score = decode_tensor(out.double())
        if refiner is not None:
            corners, score, _, fallback = finish_corners(refiner, x, corners, score)
            run.last_fallback = fallback.cpu().numpy()
        return corners.cpu().numpy() - 0.5, score.cpu().numpy()      # continuous -> pixel-centre
    run.refined = refiner is not None
    return run


def load_pose_model(path: str):
    """An Ultralytics YOLO pose model from a checkpoint, or a DataError naming the file."""
    if not os.path.isfile(path):
        raise DataError(f"{path} does not exist")
    from ultralytics import YOLO

    try:
        return YOLO(path, task="pose")
    except Exception as e:   # a file that is not an Ultralytics checkpoint fails deep inside torch.load
        raise DataError(f"{path}: not an Ultralytics pose checkpoint ({type(e).__name__}: {e})") from None


def onnx_runner(path: str, threads: int = 0, refine: bool = True) -> Runner:
    """card_corners.onnx through onnxruntime CPU: its refined `corners` and `score` outputs, or with
    refine=False (or a file exported without the refiner) the decoded `output0` alone."""
    sess = ort_session(path, threads)
    name = sess.get_inputs()[0].name
    refined = refine and {o.name for o in sess.get_outputs()} >= {REFINED_OUTPUT, SCORE_OUTPUT}
    if refine and not refined:
        logger.warning("%s has no %r output (exported with --no-refine): scoring the detector's %r alone", path,
                       REFINED_OUTPUT, RAW_OUTPUT)
    has_fallback = refined and FALLBACK_OUTPUT in {o.name for o in sess.get_outputs()}
    fetch = ([REFINED_OUTPUT, SCORE_OUTPUT] + ([FALLBACK_OUTPUT] if has_fallback else [])) if refined else [RAW_OUTPUT]

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        corners, scores, fallbacks = [], [], []
        for i in range(len(images)):     # batch 1 is what the exported graph declares
            outs = sess.run(fetch, {name: to_input(images[i:i + 1])})
            if refined:
                c, s = torch.from_numpy(outs[0].astype(np.float64)), torch.from_numpy(outs[1].astype(np.float64))
                fallbacks.append(outs[2] if has_fallback else np.zeros((1, c.shape[1]), np.float32))
            else:
                c, s = decode_tensor(torch.from_numpy(outs[0].astype(np.float64)))
            corners.append(c.numpy() - 0.5)
            scores.append(s.numpy())
        if refined:
            run.last_fallback = np.concatenate(fallbacks) if has_fallback else None
        return np.concatenate(corners), np.concatenate(scores)
    run.refined = refined
    return run


def load_checked(path: str) -> np.ndarray:
    """(640, 480, 3) uint8 RGB; other sizes are an error since the corners are in 480x640 pixels."""
    img = read_image(path)
    if img.shape[:2] != (IMAGE_HEIGHT, IMAGE_WIDTH):
        raise DataError(f"{path}: image is {img.shape[1]}x{img.shape[0]}, but corner annotations are in pixels of "
                        f"the {IMAGE_WIDTH}x{IMAGE_HEIGHT} image")
    return img


def iter_batches(paths: list[str], batch_size: int, ahead: int = 3) -> Iterator[np.ndarray]:
    """Decode batches on threads (cv2 releases the GIL), at most `ahead` batches ahead of the
    model, so memory stays bounded on a split of any size."""
    chunks = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    with ThreadPoolExecutor(ahead + 1) as pool:
        pending = deque()
        for chunk in chunks:
            pending.append(pool.submit(lambda c: np.stack([load_checked(p) for p in c]), chunk))
            if len(pending) > ahead:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


def predict_split(runner: Runner, samples: list[tuple[str, np.ndarray | None]], batch_size: int = 16,
                  conf: float = DEFAULT_CONF, progress: Callable | None = None) -> dict:
    """Runs the model over samples [(path, corners or None)] and returns the raw per-image results:
    pred (M, K, 2), score (M,), found (M,), truth (M, K, 2) NaN for negatives, positive (M,), fallback."""
    paths = [p for p, _ in samples]
    preds, scores, founds, fallbacks = [], [], [], []
    batches = iter_batches(paths, batch_size)
    if progress is not None:
        batches = progress(batches, total=(len(paths) + batch_size - 1) // batch_size)
    for images in batches:
        kpts, score = runner(images)
        preds.append(kpts)
        scores.append(score)
        founds.append(score >= conf)
        if getattr(runner, "last_fallback", None) is not None:
            fallbacks.append(runner.last_fallback)
    truth = np.stack([c if c is not None else np.full((NUM_CORNERS, 2), np.nan) for _, c in samples])
    return {"paths": paths, "pred": np.concatenate(preds), "score": np.concatenate(scores),
            "found": np.concatenate(founds), "truth": truth, "positive": np.array([c is not None for _, c in samples]),
            # (M, K) 1 where a hidden corner was placed where its sides meet; None without the stage
            "fallback": np.concatenate(fallbacks) if fallbacks and len(fallbacks) == len(preds) else None}


def score_predictions(raw: dict) -> dict:
    """predict_split()'s result -> summarize() metrics (positives scored, negatives as false positives)."""
    pos = raw["positive"]
    errors = corner_errors(raw["pred"][pos], raw["found"][pos], raw["truth"][pos])
    return summarize(errors, in_frame(raw["truth"][pos]), negatives_found=raw["found"][~pos])


def evaluate_runner(runner: Runner, samples, batch_size: int = 16, conf: float = DEFAULT_CONF, progress=None
                    ) -> tuple[dict, dict]:
    raw = predict_split(runner, samples, batch_size, conf, progress)
    return score_predictions(raw), raw


