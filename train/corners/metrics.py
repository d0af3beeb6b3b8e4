"""Corner accuracy in pixels of the 480x640 image, and decoding of the model's raw output.

One decoder serves PyTorch and ONNX alike, since the exported graph returns exactly what the
PyTorch model returns in eval mode:

    output (B, 5 + 3K, N) float32, K = 4 corners, N = 6300 anchors at 640x480 (strides 8, 16, 32)
      rows 0..3   box cx, cy, w, h            (input pixels, continuous coordinates)
      row  4      card confidence             (0..1, sigmoid applied)
      rows 5..16  x1, y1, v1, ..., x4, y4, v4  (input pixels; v = visibility 0..1, sigmoid applied)

There is one card per frame, so no NMS: the best anchor decides whether there is a card (its
confidence >= `conf`), and the corners are the confidence-weighted mean over the anchors that
agree with it (confidence >= 0.9 x the best, box IoU >= 0.6 with the best box). Neighbouring
anchors often score within 0.002 of each other while their corners differ by many pixels; taking
the argmax alone flipped between them under FP16 rounding and was less steady.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from common import NO_CARD_SCORE
from corners.data import CORNER_NAMES, NUM_CORNERS

THRESHOLDS_PX = (5, 10, 20)
DEFAULT_CONF = NO_CARD_SCORE
# Early stopping and the LR plateau watch the mean corner error with every error capped here and
# a missed card counted as the cap: one lost image cannot swamp the mean, and it still counts.
ERROR_CAP_PX = 50.0


AGREE_SCORE_FRACTION = 0.9
AGREE_MIN_IOU = 0.6


def decode_tensor(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """output (B, 5 + 3K, N) -> corners (B, K, 2) continuous px (as the output), score (B,).

    Plain tensor operations only: the same code runs here and inside card_corners.onnx."""
    boxes, score = output[:, :4], output[:, 4]                                   # (B, 4, N), (B, N)
    best_score, best = score.max(-1)                                             # (B,)
    best_box = torch.gather(boxes, 2, best[:, None, None].expand(-1, 4, 1))      # (B, 4, 1)
    lo = torch.maximum(best_box[:, :2] - best_box[:, 2:] / 2, boxes[:, :2] - boxes[:, 2:] / 2)
    hi = torch.minimum(best_box[:, :2] + best_box[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2)
    inter = (hi - lo).clamp(min=0).prod(1)                                       # (B, N)
    iou = inter / (best_box[:, 2] * best_box[:, 3] + boxes[:, 2] * boxes[:, 3] - inter + 1e-9)
    b, n = score.shape
    # The best anchor always counts (a zero-area box would fail its own IoU test), so the weights
    # never all vanish; an anchor tied with it counts too, harmlessly.
    agree = (score >= AGREE_SCORE_FRACTION * best_score[:, None]) & (iou >= AGREE_MIN_IOU)
    agree = agree | (score == best_score[:, None])
    weight = score * agree.to(score.dtype)                                       # (B, N)
    kpts = output[:, 5:].reshape(b, -1, 3, n)[:, :, :2]                          # (B, K, 2, N)
    corners = (kpts * weight[:, None, None]).sum(-1) / weight.sum(-1)[:, None, None]
    return corners, best_score


def decode(output: np.ndarray, conf: float = DEFAULT_CONF) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """output (B, 5 + 3K, N) -> corners (B, K, 2) pixel-centre coordinates, score (B,), found (B,) bool."""
    corners, score = decode_tensor(torch.from_numpy(np.asarray(output, np.float64)))
    score = score.numpy()
    return corners.numpy() - 0.5, score, score >= conf      # continuous -> pixel-centre


def corner_errors(pred: np.ndarray, found: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """(B, K, 2), (B,), (B, K, 2) -> (B, K) Euclidean error in px; inf where no card was found."""
    err = np.linalg.norm(pred - truth, axis=-1)
    err[~found] = np.inf
    return err


def summarize(errors: np.ndarray, visible: np.ndarray, negatives_found: np.ndarray | None = None,
              thresholds=THRESHOLDS_PX) -> dict:
    """Corner metrics over a split.

    errors (M, K) px with inf for a missed card, visible (M, K) bool = the true corner is inside the
    frame (corners outside cannot be seen, so they are left out and counted). A missed card counts
    as a failure for each of its corners: it is never dropped from a denominator.
    negatives_found (P,) bool: a card was reported on an image that has none.
    """
    errors, visible = np.asarray(errors, np.float64).reshape(-1, NUM_CORNERS), np.asarray(visible, bool)
    visible = visible.reshape(-1, NUM_CORNERS)
    e = errors[visible]
    finite = e[np.isfinite(e)]
    has_visible = visible.any(1)
    out = {
        "images": int(len(errors)),
        "corners": int(visible.sum()),
        "corners_outside_frame": int((~visible).sum()),
        "missed_cards": int((~np.isfinite(errors).all(1) & has_visible).sum()),
        "mean_px": float(finite.mean()) if len(finite) else float("nan"),
        "median_px": float(np.median(e)) if len(e) else float("nan"),
        "capped_mean_px": float(np.minimum(e, ERROR_CAP_PX).mean()) if len(e) else float("nan"),
        "p95_px": float(np.percentile(e, 95, method="higher")) if len(e) else float("nan"),   # inf-safe
    }
    for t in thresholds:
        out[f"pct_within_{t}px"] = 100.0 * float((e <= t).mean()) if len(e) else float("nan")
        ok = (errors <= t) | ~visible
        out[f"pct_images_all_within_{t}px"] = 100.0 * float(ok[has_visible].all(1).mean()) if has_visible.any() \
            else float("nan")
        for k, name in enumerate(CORNER_NAMES):
            ek = errors[visible[:, k], k]
            out[f"{name}_pct_within_{t}px"] = 100.0 * float((ek <= t).mean()) if len(ek) else float("nan")
    if negatives_found is not None:
        neg = np.asarray(negatives_found, bool)
        out["negative_images"] = int(len(neg))
        out["false_positive_pct"] = 100.0 * float(neg.mean()) if len(neg) else float("nan")
    return out


def jsonable(m: dict) -> dict:
    """inf / NaN are not JSON: null instead."""
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in m.items()}


def false_alarms(m: dict) -> str | None:
    """summarize()'s false alarms in words, or None for a split without card-free images."""
    if not m.get("negative_images"):
        return None
    return f"a card claimed on {m['false_positive_pct']:.2f} % of {m['negative_images']} card-free images"


def format_table(m: dict, thresholds=THRESHOLDS_PX) -> str:
    """Plain-text table of summarize()'s result, for the terminal."""
    negatives = false_alarms(m)
    if not m["images"] and negatives:   # a card-free set (a false-alarm check): no corner table
        return negatives
    rows = [("", *[f"<= {t} px" for t in thresholds])]
    rows.append(("all corners", *[f"{m[f'pct_within_{t}px']:.2f} %" for t in thresholds]))
    for name in CORNER_NAMES:
        rows.append((name, *[f"{m[f'{name}_pct_within_{t}px']:.2f} %" for t in thresholds]))
    rows.append(("images, all 4", *[f"{m[f'pct_images_all_within_{t}px']:.2f} %" for t in thresholds]))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)) for r in rows]
    lines.append(f"mean {m['mean_px']:.2f} px, median {m['median_px']:.2f} px, 95th percentile {m['p95_px']:.2f} px "
                 f"over {m['corners']} corners of {m['images']} images; {m['missed_cards']} cards missed "
                 f"(counted as failures); {m['corners_outside_frame']} corners outside the frame left out")
    if negatives:
        lines.append(negatives)
    return "\n".join(lines)
