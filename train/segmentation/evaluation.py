"""Segmentation accuracy on a split: one predictor for .pt and .onnx files, the pooled confusion
matrix, the images that cost the most (evaluate.py, compare.py and export.py share it)."""

from __future__ import annotations

import heapq
import logging
import os
import time
from collections.abc import Callable

import cv2
import numpy as np
import torch
from tqdm import tqdm

from common import MASK_THRESHOLD, write_ranked
from onnx_utils import ort_session
from segmentation.dataset import find_samples, load_sample
from segmentation.metrics import ConfusionMatrix
from segmentation.model import image_tensor, load_checkpoint_model

logger = logging.getLogger(__name__)

THRESHOLD = MASK_THRESHOLD
OVERLAY_RGB = (135, 206, 235)   # light blue, as in the web app
WORST_LISTED = 10               # images named in the JSON's worst_images (more with --overlays)


def load_predictor(path: str, device: str = "cpu", threads: int = 0) -> Callable[[np.ndarray], np.ndarray]:
    """(640, 480, 3) uint8 RGB -> (640, 480) float32 card probability, for .pt and .onnx alike."""
    if path.endswith(".onnx"):
        sess = ort_session(path, threads)
        name = sess.get_inputs()[0].name

        def run_onnx(image: np.ndarray) -> np.ndarray:
            x = np.ascontiguousarray(image.transpose(2, 0, 1)[None], dtype=np.float32) / 255.0
            return sess.run(None, {name: x})[0][0, 0]

        return run_onnx

    model, _ = load_checkpoint_model(path)
    model.to(device)

    @torch.inference_mode()
    def run_torch(image: np.ndarray) -> np.ndarray:
        return model(image_tensor(image, device)).float().softmax(1)[0, 1].cpu().numpy()

    return run_torch


def card_overlap(prob: np.ndarray, truth: np.ndarray) -> tuple[np.ndarray, int, int]:
    """(640, 480) probability and 0/1 truth -> the 0/1 prediction, and its intersection and union with
    the truth in pixels (a card-free frame predicted card-free: 0 and 0)."""
    pred = (prob >= THRESHOLD).astype(np.uint8)
    return pred, int((pred & truth).sum()), int((pred | truth).sum())


def overlay(image: np.ndarray, prob: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """RGB image with the prediction in translucent light blue and the truth outline in green."""
    out = image.copy()
    pred = prob >= THRESHOLD
    out[pred] = (0.55 * out[pred] + 0.45 * np.array(OVERLAY_RGB)).astype(np.uint8)
    contours, _ = cv2.findContours(truth.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    cv2.drawContours(out, contours, -1, (0, 255, 0), 1)
    return out


def evaluate_model(model_path: str, data_path: str, split: str = "test", limit: int = 0, overlays: int = 0,
                   overlay_dir: str | None = None, device: str = "cpu", quiet: bool = False) -> dict:
    """Metrics of one model on one split; with overlays, the `overlays` worst images drawn into
    overlay_dir. Worst means the most wrong pixels (false card + missed card): each image's share
    of what the pooled IoU lost. Not the lowest per-image IoU, which is 0 for a card-free frame
    with a single stray pixel."""
    samples = find_samples(data_path, split)
    if limit:
        samples = samples[:limit]
    predict = load_predictor(model_path, device)
    confmat = ConfusionMatrix(2)
    keep = max(overlays, WORST_LISTED)
    # The `keep` most wrong images so far, least wrong on top: (wrong px, -index, IoU, overlay or
    # None); among equally wrong images the later one goes first, as a full sort would drop it.
    worst: list[tuple[int, int, float, np.ndarray | None]] = []
    per_image_iou, elapsed = [], 0.0
    for i, (img_path, mask_path) in enumerate(tqdm(samples, desc="evaluate", unit="img", disable=quiet)):
        image, truth = load_sample(img_path, mask_path)
        t0 = time.perf_counter()
        prob = predict(image)
        elapsed += time.perf_counter() - t0
        pred, inter, union = card_overlap(prob, truth)
        confmat.update(torch.from_numpy(truth), torch.from_numpy(pred))
        iou = inter / union if union else 1.0
        per_image_iou.append(iou)
        entry = (union - inter, -i)
        if keep and (len(worst) < keep or entry > worst[0][:2]):
            drawn = overlay(image, prob, truth) if overlays else None
            (heapq.heappush if len(worst) < keep else heapq.heapreplace)(worst, (*entry, iou, drawn))
    worst.sort(key=lambda w: (-w[0], -w[1]))
    if overlays:
        shown = worst[:overlays]
        write_ranked(overlay_dir, [(os.path.basename(samples[-i][0]), drawn) for _, i, _, drawn in shown])
        logger.info("%d overlays of the worst images -> %s", len(shown), overlay_dir)
    metrics = confmat.compute()
    lowest = int(np.argmin(per_image_iou))
    return {"model": model_path, "data_path": data_path, "split": split, "images": len(samples),
            **metrics, "mean_image_iou": float(np.mean(per_image_iou)), "min_image_iou": per_image_iou[lowest],
            "worst_image": os.path.basename(samples[lowest][0]),
            "worst_images": [{"image": os.path.basename(samples[-i][0]), "wrong_pixels": wrong, "iou": iou}
                             for wrong, i, iou, _ in worst],
            "mean_inference_ms": 1000 * elapsed / len(samples)}
