"""Evaluate a corner model (.pt from train_corners.py, or the exported .onnx) on a split.

    python train/evaluate_corners.py train/runs/corners/yolo12n_pose/weights/best.pt
    python train/evaluate_corners.py train/exported_models/card_corners.onnx --overlays 12
    python train/evaluate_corners.py model.onnx --data-path /data/cards --split test --json corners.json

Reports, in pixels of the 480x640 image: % of corners within 5, 10 and 20 px (overall and per
corner), % of images with all 4 corners within each, mean / median / 95th percentile error. A
card the model misses counts as a failure for all its corners, never as a smaller denominator;
corners outside the frame are left out and counted. Images without a card report how often a
card was claimed. The corners scored are the refined ones (corners/refine.py: inside an exported
.onnx, --refiner for a .pt); --no-refine scores the detector alone. Writes JSON (default: next to
the model) and, with --overlays N, the N worst images with truth (green) and prediction (red),
corners numbered 1-4 from top-left. Where the dataset has the generator's corner_visibility.json,
the corners hidden by a finger are also scored alone; for a model with the refine stage, the share
of corners its fallback placed where their sides meet is reported.
"""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
from tqdm import tqdm  # noqa: E402

from common import (  # noqa: E402
    DEFAULT_DATASET,
    OK_SCORE,
    DataError,
    atomic_write_bytes,
    resolve_path,
    run_script,
    write_ranked,
)
from corners.data import HIDDEN_STATE, corner_samples, corner_states, in_frame  # noqa: E402
from corners.metrics import (  # noqa: E402
    DEFAULT_CONF,
    THRESHOLDS_PX,
    corner_errors,
    format_table,
    jsonable,
    match_cards,
    split_metrics,
)
from corners.predict import (  # noqa: E402
    Runner,
    load_checked,
    load_pose_model,
    onnx_runner,
    predict_split,
    scan_runner,
    torch_runner,
)
from corners.refine import DEFAULT_REFINER, load_refiner  # noqa: E402

logger = logging.getLogger(__name__)


def load_runner(path: str, device: str = "cpu", threads: int = 0, refine: bool = True,
                refiner: str = DEFAULT_REFINER, seg_model: str | None = None, min_score: float = DEFAULT_CONF
                ) -> Runner:
    """.onnx through onnxruntime (CPU; its refiner is inside the file and beside it), .pt through
    Ultralytics (FP32 on `device`) followed by the `refiner` checkpoint. refine=False: the detector
    alone. With seg_model (.onnx files): the cards scan.py reports, checked against that mask."""
    if path.endswith(".onnx") and seg_model:
        return scan_runner(path, seg_model, min_score, threads)
    if seg_model:
        raise DataError(f"--seg-model checks an exported corner model (.onnx), not {path}")
    if path.endswith(".onnx"):
        return onnx_runner(path, threads, refine)
    model = load_pose_model(path).model.float().to(device).eval()
    return torch_runner(model, load_refiner(resolve_path(refiner), device) if refine else None)


def draw(image: np.ndarray, truth: np.ndarray | None, pred: np.ndarray | None) -> np.ndarray:
    """RGB image with the true cards (green) and the predicted ones (red), (N, 4, 2) or (4, 2) each,
    corners numbered 1-4."""
    out = image.copy()
    for quads, colour in ((truth, (0, 200, 0)), (pred, (230, 30, 30))):
        for pts in ([] if quads is None else np.asarray(quads).reshape(-1, 4, 2)):
            poly = np.round(pts).astype(np.int32)
            cv2.polylines(out, [poly], True, colour, 1, cv2.LINE_AA)
            for k, (x, y) in enumerate(poly):
                cv2.circle(out, (int(x), int(y)), 3, colour, -1, cv2.LINE_AA)
                cv2.putText(out, str(k + 1), (int(x) + 5, int(y) - 5), cv2.FONT_HERSHEY_SIMPLEX, 0.5, colour, 1,
                            cv2.LINE_AA)
    return out


def image_errors(raw: dict) -> np.ndarray:
    """(M,) how wrong each image is, for ranking the overlays: the largest corner error of its card
    (one card, the single answer), the largest corner error of its cards plus 1000 per card missed or
    reported wrong (several cards, every card found), inf for a card-free image with a card reported
    and -1 for one without."""
    out = np.empty(len(raw["truth"]))
    cards = raw.get("cards")
    for i, truth in enumerate(raw["truth"]):
        if len(truth) == 0:
            claimed = raw["found"][i] or (cards is not None and len(cards[i]))
            out[i] = np.inf if claimed else -1.0
        elif len(truth) == 1 or cards is None:
            out[i] = np.linalg.norm(raw["pred"][i] - truth[0], axis=-1).max() if raw["found"][i] else np.inf
        else:
            match, cost = match_cards(cards[i], truth, in_frame(truth))
            finite = cost[np.isfinite(cost)]
            out[i] = 1000.0 * (int((match < 0).sum()) + len(cards[i]) - int((match >= 0).sum())) \
                + (finite.max() if len(finite) else 0.0)
    return out


def write_overlays(raw: dict, out_dir: str, n: int) -> None:
    """The n worst images: largest corner error first, missed cards and false alarms worst of all."""
    err = image_errors(raw)
    shown = []
    for i in np.argsort(-err, kind="stable")[:n]:
        truth = raw["truth"][i]
        if len(truth) > 1 and raw.get("cards") is not None:
            pred = raw["cards"][i]
        else:
            pred = raw["pred"][i] if raw["found"][i] else None
        shown.append((os.path.basename(raw["paths"][i]), draw(load_checked(raw["paths"][i]), truth, pred)))
    write_ranked(out_dir, shown)
    logger.info("%d overlays -> %s", min(n, len(err)), out_dir)


def evaluate_corner_model(model_path: str, data_path: str, split: str = "test", conf: float = DEFAULT_CONF,
                          batch_size: int = 16, device: str = "cpu", limit: int = 0, quiet: bool = False,
                          refine: bool = True, refiner: str = DEFAULT_REFINER, seg_model: str | None = None,
                          min_score: float = OK_SCORE) -> tuple[dict, dict]:
    samples = corner_samples(data_path, split)
    if limit:
        samples = samples[:limit]
    progress = None if quiet else (lambda it, total: tqdm(it, total=total, desc="evaluate", unit="batch"))
    runner = load_runner(model_path, device, refine=refine, refiner=refiner, seg_model=seg_model, min_score=min_score)
    raw = predict_split(runner, samples, batch_size, conf, progress)
    states = corner_states(data_path, split, samples)
    metrics = split_metrics(raw["truth"], raw["pred"], raw["found"], raw["cards"], raw["card_scores"], states)
    metrics.update(model=os.path.basename(model_path), data_path=data_path, split=split, conf=conf,
                   refined=runner.refined, reported=f"scan.py ok (score >= {min_score:g}, mask agrees)" if seg_model
                   else f"score >= {conf:g}")
    metrics.update(hidden_and_fallback(raw, states))
    return metrics, raw


def hidden_and_fallback(raw: dict, states: list[np.ndarray] | None) -> dict:
    """On the images with one card: the corners a finger hides (the generator's corner_visibility.json:
    state 1) scored alone, and how often the refine stage placed a corner where its sides meet (the
    fallback), overall and on hidden and on visible corners. Empty where neither is known."""
    out = {}
    one = np.array([len(t) == 1 for t in raw["truth"]], bool)
    if not one.any():
        return out
    truth = np.stack([t[0] for t, o in zip(raw["truth"], one) if o])
    errors = corner_errors(raw["pred"][one], raw["found"][one], truth)
    fallback = raw.get("fallback")
    st = np.stack([s[0] for s, o in zip(states, one) if o]) if states is not None else None
    if st is not None:
        hidden = st == HIDDEN_STATE
        out["hidden_corners"] = int(hidden.sum())
        for t in THRESHOLDS_PX:
            out[f"hidden_pct_within_{t}px"] = 100.0 * float((errors[hidden] <= t).mean()) if hidden.any() \
                else float("nan")
    if fallback is not None:
        inside = in_frame(truth)
        fb = fallback[one] > 0.5
        out["fallback_pct"] = 100.0 * float(fb[inside].mean()) if inside.any() else float("nan")
        if st is not None:
            for name, sel in (("hidden", st == HIDDEN_STATE), ("visible", st == 2)):
                out[f"fallback_pct_{name}"] = 100.0 * float(fb[sel].mean()) if sel.any() else float("nan")
    return out


def main(args: argparse.Namespace) -> dict:
    model_path, data_path = resolve_path(args.model), resolve_path(args.data_path)
    if args.overlays < 0:
        raise DataError(f"--overlays must be 0 or more, got {args.overlays}")
    if not os.path.isfile(model_path):
        raise DataError(f"{model_path} does not exist")
    metrics, raw = evaluate_corner_model(model_path, data_path, args.split, args.conf, args.batch_size,
                                         args.device, args.limit, refine=not args.no_refine, refiner=args.refiner,
                                         seg_model=resolve_path(args.seg_model) if args.seg_model else None,
                                         min_score=args.min_score)
    print(format_table(metrics))
    if metrics.get("hidden_corners"):
        print(f"{metrics['hidden_corners']} corners hidden by a finger: "
              + ", ".join(f"{metrics[f'hidden_pct_within_{t}px']:.2f} % within {t} px" for t in THRESHOLDS_PX))
    if metrics["corners"] and "fallback_pct" in metrics:
        print(f"placed where their sides meet: {metrics['fallback_pct']:.2f} % of corners in the frame"
              + (f" ({metrics['fallback_pct_hidden']:.2f} % of hidden, {metrics['fallback_pct_visible']:.2f} % "
                 "of visible ones)" if "fallback_pct_hidden" in metrics else ""))
    json_path = resolve_path(args.json or os.path.splitext(model_path)[0] + f"_corners_{args.split}.json")
    atomic_write_bytes(json_path, (json.dumps(jsonable(metrics), indent=1) + "\n").encode(), fsync=False)
    logger.info("metrics -> %s", json_path)
    if args.overlays:
        write_overlays(raw, resolve_path(args.overlay_dir or os.path.splitext(json_path)[0] + "_overlays"),
                       args.overlays)
    return metrics


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Corner accuracy of a .pt or .onnx corner model", add_help=add_help)
    p.add_argument("model", help="train_corners.py weights (.pt) or export_corners.py output (.onnx)")
    p.add_argument("--data-path", default=DEFAULT_DATASET)
    p.add_argument("--split", default="test")
    p.add_argument("--refiner", default=DEFAULT_REFINER, help=".pt only: train_corner_refiner.py checkpoint "
                   "applied after the detector (an .onnx file carries its own)")
    p.add_argument("--no-refine", action="store_true", help="score the detector's corners alone")
    p.add_argument("--conf", type=float, default=DEFAULT_CONF, help="below this confidence there is no card")
    p.add_argument("--seg-model", default=None, help=".onnx only: score the cards scan.py reports `ok` with this "
                   "segmentation model (the mask must agree, the score reach --min-score); default: every card "
                   "scoring --conf")
    p.add_argument("--min-score", type=float, default=OK_SCORE, help="with --seg-model: scan.py's "
                   "--min-score (%(default)s)")
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--device", default="cpu", help=".pt only: e.g. cuda:0")
    p.add_argument("--limit", type=int, default=0, help="first N images only (0 = all)")
    p.add_argument("--json", default=None, help="default: <model>_corners_<split>.json")
    p.add_argument("--overlays", type=int, default=0, help="write the N worst images with corners drawn")
    p.add_argument("--overlay-dir", default=None)
    return p


if __name__ == "__main__":
    run_script(main, get_args_parser)
