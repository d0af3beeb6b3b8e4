"""Corner accuracy in pixels of the 480x640 image, and decoding of the model's raw output.

One decoder serves PyTorch and ONNX alike, since the exported graph returns exactly what the
PyTorch model returns in eval mode:

    output (B, 5 + 3K, N) float32, K = 4 corners, N = 6300 anchors at 640x480 (strides 8, 16, 32)
      rows 0..3   box cx, cy, w, h            (input pixels, continuous coordinates)
      row  4      card confidence             (0..1, sigmoid applied)
      rows 5..16  x1, y1, v1, ..., x4, y4, v4  (input pixels; v = visibility 0..1, sigmoid applied)

Every card: greedy, MAX_CARDS times, the best anchor left is a card (its confidence its score),
its corners are the confidence-weighted mean of the anchors that agree with it (confidence >= 0.9 x
its own, corners close to its own), and the anchors of the same card are suppressed. "The same card" is judged
on corners, not boxes: the cards of a fan or a pile overlap so much that their boxes do (box IoU
0.7 and more between neighbours), while their corners lie apart. Neighbouring anchors often score
within 0.002 of each other while their corners differ by many pixels; the mean is steadier than
the argmax alone, which flipped between them under FP16 rounding.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from common import CENTRAL_MIN_SHARE, IMAGE_HEIGHT, IMAGE_WIDTH, NO_CARD_SCORE
from corners.data import CORNER_NAMES, NUM_CORNERS, in_frame

THRESHOLDS_PX = (5, 10, 20)
DEFAULT_CONF = NO_CARD_SCORE
# Early stopping and the LR plateau watch the mean corner error with every error capped here and
# a missed card counted as the cap: one lost image cannot swamp the mean, and it still counts.
ERROR_CAP_PX = 50.0


AGREE_SCORE_FRACTION = 0.9
# Two anchors are the same card when every corner of one lies within this share of the card's size
# (the square root of the best anchor's box area) of the other's: 14 px for a card of 120 px. The
# nearest distinct cards, two of a fan 8 degrees apart, differ by about 0.2 at the top corners.
SAME_CARD_CORNER_SHARE = 0.12
# Or when their boxes overlap much and their corners lie within 0.15 of the card's size on average:
# an anchor of the card whose corners stray (two corners 20 % of the card off: 0.12 on average)
# rather than the neighbour in a fan (10 degrees apart: 0.21 on average, at a box IoU of 0.6-0.8).
SAME_CARD_BOX_IOU, SAME_CARD_MEAN_SHARE = 0.7, 0.15
# Cards decoded per frame: a 3 x 3 binder page and a row of three more (scan.py tiles larger photos).
MAX_CARDS = 12


def _box_iou(best_box: torch.Tensor, boxes: torch.Tensor) -> torch.Tensor:
    """best_box (B, 4, 1), boxes (B, 4, N) cx, cy, w, h -> (B, N) IoU."""
    lo = torch.maximum(best_box[:, :2] - best_box[:, 2:] / 2, boxes[:, :2] - boxes[:, 2:] / 2)
    hi = torch.minimum(best_box[:, :2] + best_box[:, 2:] / 2, boxes[:, :2] + boxes[:, 2:] / 2)
    inter = (hi - lo).clamp(min=0).prod(1)                                       # (B, N)
    return inter / (best_box[:, 2] * best_box[:, 3] + boxes[:, 2] * boxes[:, 3] - inter + 1e-9)


def decode_cards_tensor(output: torch.Tensor, max_cards: int = MAX_CARDS, conf: float = NO_CARD_SCORE
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """output (B, 5 + 3K, N) -> cards (B, max_cards, K, 2) continuous px and scores (B, max_cards),
    best first; a slot without a card (score below `conf`) has score 0 and corners 0.

    Plain tensor operations only, unrolled over the slots: the same code runs here and inside
    card_corners.onnx."""
    boxes, score = output[:, :4], output[:, 4]                                   # (B, 4, N), (B, N)
    b, n = score.shape
    kpts = output[:, 5:].reshape(b, -1, 3, n)[:, :, :2]                          # (B, K, 2, N)
    left = score
    index = torch.arange(n, device=output.device)
    cards, scores = [], []
    for _ in range(max_cards):
        best_score, best = left.max(-1)                                          # (B,)
        best_box = torch.gather(boxes, 2, best[:, None, None].expand(-1, 4, 1))  # (B, 4, 1)
        ref = torch.gather(kpts, 3, best[:, None, None, None].expand(-1, kpts.shape[1], 2, 1))   # (B, K, 2, 1)
        dist = torch.linalg.norm(kpts - ref, dim=2)                              # (B, K, N)
        size = (best_box[:, 2] * best_box[:, 3]).clamp(min=1.0).sqrt()          # (B, 1)
        close = dist.amax(1) <= SAME_CARD_CORNER_SHARE * size                    # (B, N)
        same = close | ((_box_iou(best_box, boxes) >= SAME_CARD_BOX_IOU)
                        & (dist.mean(1) <= SAME_CARD_MEAN_SHARE * size))
        # Averaged: the close anchors only (a stray one is suppressed, not averaged in). The best
        # anchor always counts (a zero-area box would fail its own test), so the weights never all
        # vanish; an anchor tied with it counts too, harmlessly.
        agree = (close & (score >= AGREE_SCORE_FRACTION * best_score[:, None])) | (index[None] == best[:, None])
        weight = score * agree.to(score.dtype)                                   # (B, N)
        corners = (kpts * weight[:, None, None]).sum(-1) / weight.sum(-1)[:, None, None]
        found = best_score >= conf
        cards.append(torch.where(found[:, None, None], corners, torch.zeros_like(corners)))
        scores.append(torch.where(found, best_score, torch.zeros_like(best_score)))
        left = torch.where(same | (index[None] == best[:, None]), torch.full_like(left, -1.0), left)
    return torch.stack(cards, 1), torch.stack(scores, 1)


def central_index(cards: torch.Tensor, scores: torch.Tensor, width: int = IMAGE_WIDTH, height: int = IMAGE_HEIGHT
                  ) -> torch.Tensor:
    """cards (B, M, K, 2) continuous px, scores (B, M) best first -> (B,) the slot of the card nearest
    the frame's centre among those scoring at least CENTRAL_MIN_SHARE of the best (slot 0, the best,
    when there is none)."""
    centre = torch.tensor([width / 2, height / 2], dtype=cards.dtype, device=cards.device)
    dist = torch.linalg.norm(cards.mean(2) - centre, dim=-1)                     # (B, M)
    strong = (scores >= CENTRAL_MIN_SHARE * scores[:, :1]) & (scores > 0)
    dist = torch.where(strong, dist, torch.full_like(dist, 1e9))
    dist = torch.where(torch.arange(scores.shape[1], device=cards.device)[None] == 0, dist - 1e-3, dist)   # ties
    return dist.argmin(1)


def pick(cards: torch.Tensor, scores: torch.Tensor, index: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The slot `index` (B,) of cards (B, M, K, 2) and scores (B, M)."""
    k = cards.shape[2]
    return (torch.gather(cards, 1, index[:, None, None, None].expand(-1, 1, k, 2))[:, 0],
            torch.gather(scores, 1, index[:, None])[:, 0])


def decode_tensor(output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """output (B, 5 + 3K, N) -> the frame's card: corners (B, K, 2) continuous px (as the output) and
    score (B,); the central strong card of decode_cards_tensor (0 where there is none)."""
    cards, scores = decode_cards_tensor(output)
    return pick(cards, scores, central_index(cards, scores))


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


# A reported card is the true card it matches (the right card, if not a precise one) when each of its
# corners in the frame lies within this share of the card's size (the square root of its area), or
# RIGHT_CARD_MIN_PX: a quad spanning two cards, or a card and a strip of its neighbour, does not.
RIGHT_CARD_SHARE, RIGHT_CARD_MIN_PX = 0.1, 8.0
FOUND_PX = 5.0          # a card is found when each of its corners in the frame lies within this


def card_size(quad: np.ndarray) -> float:
    """sqrt of a (4, 2) quad's area in px."""
    x, y = quad[:, 0], quad[:, 1]
    return math.sqrt(abs(0.5 * float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1)))))


def match_cards(pred: np.ndarray, truth: np.ndarray, visible: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """pred (P, K, 2), truth (T, K, 2), visible (T, K) the true corners in the frame -> (T,) the
    prediction matched to each true card (-1: none) and (T,) its cost, the largest distance of a
    corner in the frame. Greedy, cheapest pair first; one prediction per card."""
    match, cost = np.full(len(truth), -1), np.full(len(truth), np.inf)
    if not len(pred) or not len(truth):
        return match, cost
    d = np.linalg.norm(pred[None] - truth[:, None], axis=-1)                    # (T, P, K)
    c = np.where(visible[:, None], d, -np.inf).max(-1)                          # (T, P)
    c[~visible.any(1)] = np.inf
    used = np.zeros(len(pred), bool)
    for flat in np.argsort(c, axis=None, kind="stable"):
        t, p = divmod(int(flat), len(pred))
        if not np.isfinite(c[t, p]):
            break
        if match[t] < 0 and not used[p]:
            match[t], cost[t], used[p] = p, c[t, p], True
    return match, cost


def summarize_cards(truths: list[np.ndarray], preds: list[np.ndarray], states: list[np.ndarray] | None = None,
                    negatives: list[np.ndarray] | None = None, thresholds=THRESHOLDS_PX) -> dict:
    """Every card of multi-card images: truths [(T, 4, 2)] and the reported cards preds [(P, 4, 2)] per
    image (pixel-centre), states [(T, 4)] the generator's corner states or None, negatives [(P, 4, 2)]
    the cards reported on card-free images.

    recall: the share of the fully visible cards (every corner in the frame and, where the states are
    known, none hidden) found, each corner within FOUND_PX; precision: the share of the reported
    cards that are a card found so; right-card share: of the reported cards, those that are the card
    they match (RIGHT_CARD_SHARE), so 100 - it is the share of wrong cards (two cards in one quad,
    background); corners within 5 / 10 / 20 px over the cards matched that way."""
    n_cards = n_full = found_full = found_all = n_pred = precise = right = 0
    errors = []
    for i, (truth, pred) in enumerate(zip(truths, preds)):
        visible = in_frame(truth)
        full = visible.all(1)
        if states is not None and states[i] is not None and len(states[i]):
            full &= (states[i] == 2).all(1) | (states[i] < 0).any(1)
        match, cost = match_cards(pred, truth, visible)
        for t in range(len(truth)):
            n_cards += 1
            n_full += bool(full[t])
            if match[t] < 0:
                continue
            found = bool(cost[t] <= FOUND_PX)
            is_right = bool(cost[t] <= max(RIGHT_CARD_MIN_PX, RIGHT_CARD_SHARE * card_size(truth[t])))
            found_all += found
            found_full += found and bool(full[t])
            precise += found
            right += is_right
            if is_right:
                errors.append(np.linalg.norm(pred[match[t]] - truth[t], axis=-1)[visible[t]])
        n_pred += len(pred)
    e = np.concatenate(errors) if errors else np.zeros(0)
    pct = lambda a, b: 100.0 * a / b if b else float("nan")    # noqa: E731
    out = {"images": len(truths), "cards": n_cards, "fully_visible_cards": n_full, "reported": n_pred,
           "recall_pct": pct(found_full, n_full), "recall_all_pct": pct(found_all, n_cards),
           "precision_pct": pct(precise, n_pred), "right_card_pct": pct(right, n_pred), "wrong_cards": n_pred - right,
           "matched_cards": right, "matched_corners": int(len(e)),
           "matched_mean_px": float(e.mean()) if len(e) else float("nan")}
    for t in thresholds:
        out[f"matched_pct_within_{t}px"] = pct(float((e <= t).sum()), len(e))
    if negatives is not None:
        out["negative_images"] = len(negatives)
        out["false_cards"] = int(sum(len(p) for p in negatives))
        out["false_card_images_pct"] = pct(sum(int(len(p) > 0) for p in negatives), len(negatives))
    return out


def split_metrics(truths: list[np.ndarray], pred: np.ndarray, found: np.ndarray, cards: list[np.ndarray] | None,
                  card_scores: list[np.ndarray] | None = None, states: list[np.ndarray] | None = None) -> dict:
    """The metrics of a split: truths [(N, 4, 2)] per image; pred (M, 4, 2) and found (M,) the frame's
    card (the single answer); cards [(C, 4, 2)] every card found per image (None: the single answer
    only).

    The flat keys are summarize() over the images with one card, scored on the single answer (as
    before several cards existed), with the single answer's false alarms on card-free images;
    `multi` is summarize_cards() over the images with several cards; `validation_capped_mean_px`
    (what training watches) caps and averages the corner errors of both: each card of a multi-card
    image matched to a card found, unmatched ones at the cap."""
    single = [i for i, t in enumerate(truths) if len(t) == 1]
    several = [i for i, t in enumerate(truths) if len(t) > 1]
    negative = [i for i, t in enumerate(truths) if len(t) == 0]
    one = np.stack([truths[i][0] for i in single]) if single else np.zeros((0, NUM_CORNERS, 2))
    errors = corner_errors(pred[single], found[single], one)
    out = summarize(errors, in_frame(one), negatives_found=found[negative])
    rows, visible = [errors], [in_frame(one)]
    if several and cards is not None:
        out["multi"] = summarize_cards([truths[i] for i in several], [cards[i] for i in several],
                                       [states[i] for i in several] if states is not None else None,
                                       [cards[i] for i in negative])
        for i in several:
            vis = in_frame(truths[i])
            match, _ = match_cards(cards[i], truths[i], vis)
            err = np.full(vis.shape, np.inf)
            hit = match >= 0
            err[hit] = np.linalg.norm(cards[i][match[hit]] - truths[i][hit], axis=-1)
            rows.append(err)
            visible.append(vis)
    e = np.concatenate(rows)[np.concatenate(visible)]
    out["validation_capped_mean_px"] = float(np.minimum(e, ERROR_CAP_PX).mean()) if len(e) else float("nan")
    return out


def jsonable(m: dict) -> dict:
    """inf / NaN are not JSON: null instead (nested dicts too)."""
    return {k: jsonable(v) if isinstance(v, dict) else None if isinstance(v, float) and not math.isfinite(v) else v
            for k, v in m.items()}


def false_alarms(m: dict) -> str | None:
    """summarize()'s false alarms in words, or None for a split without card-free images."""
    if not m.get("negative_images"):
        return None
    return f"a card claimed on {m['false_positive_pct']:.2f} % of {m['negative_images']} card-free images"


def format_cards(m: dict) -> str:
    """summarize_cards()' result in a few lines, for the terminal."""
    lines = [f"{m['cards']} cards on {m['images']} multi-card images ({m['fully_visible_cards']} fully visible), "
             f"{m['reported']} reported: recall {m['recall_pct']:.1f} % (fully visible, corners within "
             f"{FOUND_PX:g} px; all cards {m['recall_all_pct']:.1f} %), precision {m['precision_pct']:.1f} %, "
             f"right card {m['right_card_pct']:.1f} % ({m['wrong_cards']} wrong)",
             "matched cards' corners: " + ", ".join(f"{m[f'matched_pct_within_{t}px']:.1f} % within {t} px"
                                                      for t in THRESHOLDS_PX)
             + f", mean {m['matched_mean_px']:.2f} px"]
    if m.get("negative_images"):
        lines.append(f"{m['false_cards']} cards reported on {m['negative_images']} card-free images "
                     f"({m['false_card_images_pct']:.1f} % of them)")
    return "\n".join(lines)


def format_table(m: dict, thresholds=THRESHOLDS_PX) -> str:
    """Plain-text table of split_metrics()' result, for the terminal."""
    negatives = false_alarms(m)
    multi = format_cards(m["multi"]) if m.get("multi") else None
    if not m["images"]:   # a card-free or an all multi-card set: no single-card table
        return "\n".join(x for x in (multi, negatives) if x)
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
    if multi:
        lines.append(multi)
    return "\n".join(lines)
