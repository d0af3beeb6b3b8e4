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
from corners.data import NUM_CORNERS
from corners.metrics import DEFAULT_CONF, central_index, decode_cards_tensor, decode_tensor, pick, split_metrics
from corners.refine import CornerRefiner, finish_corners
from onnx_utils import ort_session
from segmentation.dataset import read_image

logger = logging.getLogger(__name__)

# card_corners.onnx's outputs (train/exported_models/README.md): the detector's raw candidates;
# the frame's card (its central strong one) refined, in continuous px, with its confidence; and every
# card the detector found, unrefined, best first.
INPUT_NAME = "images"
RAW_OUTPUT, REFINED_OUTPUT, SCORE_OUTPUT = "output0", "corners", "score"
CARDS_OUTPUT, CARD_SCORES_OUTPUT = "cards", "card_scores"
# Diagnostics of the refine stage (corners/refine.finish_corners): per corner, the probability that
# it is in sight, and the weight (0..1) of its sides' meeting point in it.
VISIBILITY_OUTPUT, FALLBACK_OUTPUT = "visibility", "fallback"
# card_corners_refiner.onnx: inputs images and quads (N, 4, 2) continuous px; outputs corners (N, 4, 2),
# valid (N,) and the same diagnostics.
QUADS_INPUT, VALID_OUTPUT = "quads", "valid"

# (B, 640, 480, 3) uint8 RGB -> corners (B, K, 2) in pixel-centre coordinates, card confidence (B,):
# the frame's card. The function's `refined` attribute says whether the corners went through the
# refiner; after a call, `last_fallback` holds (B, K) the weight of the sides' meeting point in each
# corner (None without the refine stage) and `last_cards` every card: ((B, M, K, 2) pixel-centre,
# (B, M) scores, 0 for an empty slot), refined where the runner refines.
Runner = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]


def to_input(images: np.ndarray) -> np.ndarray:
    """(B, H, W, 3) uint8 RGB -> (B, 3, H, W) float32 0..1: the model's (and the ONNX file's) input."""
    return np.ascontiguousarray(images.transpose(0, 3, 1, 2), dtype=np.float32) / 255.0


def refine_cards(refiner: CornerRefiner, image: torch.Tensor, cards: torch.Tensor, scores: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """One image (1, 3, H, W), its cards (M, K, 2) continuous px and scores (M,) -> the found ones
    refined (card_corners_refiner.onnx's computation), a score of 0 where the result is not a card's shape."""
    found = scores > 0
    if not found.any():
        return cards, scores
    refined, valid, _, _ = finish_corners(refiner, image, cards[found], torch.ones_like(scores[found]))
    cards, scores = cards.clone(), scores.clone()
    cards[found] = refined.to(cards.dtype)
    scores[found] = scores[found] * valid.to(scores.dtype)
    return cards, scores


def torch_runner(model: torch.nn.Module, refiner: CornerRefiner | None = None) -> Runner:
    """An Ultralytics PoseModel in eval mode (its own dtype and device, FP16 EMA on CUDA included),
    decoded, then refined when a refiner (on the same device) is given: the frame's card as in
    card_corners.onnx, every card as card_corners_refiner.onnx would."""
    param = next(model.parameters())

    @torch.no_grad()
    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(to_input(images)).to(param.device)
        out = model(x.to(param.dtype))
        out = out[0] if isinstance(out, (tuple, list)) else out
        cards, scores = decode_cards_tensor(out.double())
        corners, score = pick(cards, scores, central_index(cards, scores, x.shape[-1], x.shape[-2]))
        if refiner is not None:
            corners, score, _, fallback = finish_corners(refiner, x, corners, score)
            run.last_fallback = fallback.cpu().numpy()
            refined = [refine_cards(refiner, x[i:i + 1], cards[i], scores[i]) for i in range(len(x))]
            cards, scores = torch.stack([c for c, _ in refined]), torch.stack([s for _, s in refined])
        run.last_cards = (cards.cpu().numpy() - 0.5, scores.cpu().numpy())
        return corners.cpu().numpy() - 0.5, score.cpu().numpy()      # continuous -> pixel-centre
    run.refined = refiner is not None
    run.last_fallback = None
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


def refiner_file(corner_model: str) -> str:
    """<name>_refiner.onnx next to <name>.onnx or <name>_fp32.onnx (export_corners.py writes it): the
    graph that refines every card."""
    stem = os.path.splitext(corner_model)[0].removesuffix("_fp32")
    return stem + "_refiner.onnx"


def onnx_runner(path: str, threads: int = 0, refine: bool = True, refiner_path: str | None = None) -> Runner:
    """card_corners.onnx through onnxruntime CPU: its refined `corners` and `score` outputs and its
    `cards`, each found one refined by the refiner graph (`refiner_path`, default: next to the file;
    without one, the detector's corners); with refine=False (or a file exported with --no-refine)
    the decoded `output0` alone."""
    sess = ort_session(path, threads)
    name = sess.get_inputs()[0].name
    outputs = {o.name for o in sess.get_outputs()}
    refined = refine and outputs >= {REFINED_OUTPUT, SCORE_OUTPUT}
    if refine and not refined:
        logger.warning("%s has no %r output (exported with --no-refine): scoring the detector's %r alone", path,
                       REFINED_OUTPUT, RAW_OUTPUT)
    has_fallback = refined and FALLBACK_OUTPUT in outputs
    has_cards = refined and outputs >= {CARDS_OUTPUT, CARD_SCORES_OUTPUT}
    fetch = ([REFINED_OUTPUT, SCORE_OUTPUT] + ([FALLBACK_OUTPUT] if has_fallback else [])) if refined else [RAW_OUTPUT]
    if has_cards:
        fetch += [CARDS_OUTPUT, CARD_SCORES_OUTPUT]
    refiner_path = refiner_path or refiner_file(path)
    card_refiner = ort_session(refiner_path, threads) if has_cards and os.path.isfile(refiner_path) else None

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        corners, scores, fallbacks, cards, card_scores = [], [], [], [], []
        for i in range(len(images)):     # batch 1 is what the exported graph declares
            x = to_input(images[i:i + 1])
            outs = dict(zip(fetch, sess.run(fetch, {name: x})))
            if refined:
                c, s = outs[REFINED_OUTPUT].astype(np.float64), outs[SCORE_OUTPUT].astype(np.float64)
                fallbacks.append(outs[FALLBACK_OUTPUT] if has_fallback else np.zeros((1, c.shape[1]), np.float32))
            else:
                c, s = (t.numpy() for t in decode_tensor(torch.from_numpy(outs[RAW_OUTPUT].astype(np.float64))))
            if has_cards:
                k, ks = outs[CARDS_OUTPUT][0].astype(np.float64), outs[CARD_SCORES_OUTPUT][0].astype(np.float64)
                if card_refiner is not None and (ks > 0).any():
                    found = ks > 0
                    q, valid = card_refiner.run([REFINED_OUTPUT, VALID_OUTPUT], {INPUT_NAME: x, QUADS_INPUT:
                                                                                 k[found].astype(np.float32)})
                    k[found], ks[found] = q, ks[found] * valid
                cards.append(k[None] - 0.5)
                card_scores.append(ks[None])
            corners.append(c - 0.5)
            scores.append(s)
        run.last_fallback = np.concatenate(fallbacks) if has_fallback else None
        run.last_cards = (np.concatenate(cards), np.concatenate(card_scores)) if has_cards else None
        return np.concatenate(corners), np.concatenate(scores)
    run.refined = refined
    run.last_fallback = run.last_cards = None
    return run


def scan_runner(corner_model: str, seg_model: str, min_score: float, threads: int = 0,
                refiner_path: str | None = None) -> Runner:
    """What scan.py reports on a 480x640 frame (scanning/pipeline.py): card_corners.onnx, its refiner
    graph and card_segmentation.onnx; the cards are those `ok` (a score of at least min_score and the
    mask's agreement), the frame's card the graph's own answer."""
    from scanning.pipeline import Scanner

    refiner_path = refiner_path or refiner_file(corner_model)
    scanner = Scanner(seg_model, corner_model, threads, refiner_path if os.path.isfile(refiner_path) else None)

    def run(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        corners, scores, cards, card_scores = [], [], [], []
        for image in images:
            result = scanner(np.ascontiguousarray(image[..., ::-1]))          # the scanner takes BGR
            ok = [c for c in result.cards if c.agrees and c.score >= min_score]
            cards.append(np.stack([c.quad for c in ok]) - 0.5 if ok else np.zeros((0, NUM_CORNERS, 2)))
            card_scores.append(np.array([c.score for c in ok]))
            central = result.cards[result.central] if result.central is not None else None
            corners.append(central.quad - 0.5 if central is not None else np.zeros((NUM_CORNERS, 2)))
            scores.append(central.score if central is not None else 0.0)
        # Every slot holds a reported card: the cards come as lists, not as fixed slots.
        run.last_cards = (cards, card_scores)
        return np.stack(corners), np.array(scores)
    run.refined = True
    run.last_fallback = run.last_cards = None
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


def predict_split(runner: Runner, samples: list[tuple[str, np.ndarray]], batch_size: int = 16,
                  conf: float = DEFAULT_CONF, progress: Callable | None = None) -> dict:
    """Runs the model over samples [(path, (N, 4, 2) cards)] and returns the raw per-image results:
    pred (M, K, 2) and score (M,) the frame's card, found (M,), truth [(N, 4, 2)], fallback (M, K) or
    None, cards [(C, K, 2) the cards found, best first] and card_scores [(C,)] (None when the
    runner gives only the frame's card)."""
    paths = [p for p, _ in samples]
    preds, scores, founds, fallbacks, cards, card_scores = [], [], [], [], [], []
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
        if getattr(runner, "last_cards", None) is not None:
            for c, s in zip(*runner.last_cards):
                keep = np.asarray(s) >= conf
                cards.append(np.asarray(c)[keep])
                card_scores.append(np.asarray(s)[keep])
    return {"paths": paths, "pred": np.concatenate(preds), "score": np.concatenate(scores),
            "found": np.concatenate(founds), "truth": [c for _, c in samples],
            # (M, K) 1 where a hidden corner was placed where its sides meet; None without the stage
            "fallback": np.concatenate(fallbacks) if fallbacks and len(fallbacks) == len(preds) else None,
            "cards": cards if len(cards) == len(paths) else None,
            "card_scores": card_scores if len(cards) == len(paths) else None}


def score_predictions(raw: dict) -> dict:
    """predict_split()'s result -> the metrics of corners/metrics: the single-card table (images with
    one card, scored on the frame's card), the multi-card one (images with several, every card found)
    and false cards on card-free frames; `validation` is what training watches."""
    return split_metrics(raw["truth"], raw["pred"], raw["found"], raw.get("cards"), raw.get("card_scores"))


def evaluate_runner(runner: Runner, samples, batch_size: int = 16, conf: float = DEFAULT_CONF, progress=None
                    ) -> tuple[dict, dict]:
    raw = predict_split(runner, samples, batch_size, conf, progress)
    return score_predictions(raw), raw
