"""Corner metrics (a missed card counts as a failure), decoding of the detector output, and the
L1 term of the keypoint loss."""

import numpy as np
import pytest
import torch

from conftest import CARD
from corners.metrics import corner_errors, decode, summarize


def test_metrics_on_hand_made_cases_count_a_missed_card_as_failure():
    truth = np.stack([CARD, CARD, CARD])
    pred = truth.copy()
    pred[0, :, 0] += 3.0                          # image 0: every corner 3 px off
    pred[1, 0, 1] += 12.0                         # image 1: top-left 12 px off, others exact
    found = np.array([True, True, False])         # image 2: missed
    err = corner_errors(pred, found, truth)
    visible = np.ones((3, 4), bool)
    m = summarize(err, visible, negatives_found=np.array([False, True]))
    assert m["corners"] == 12 and m["missed_cards"] == 1
    assert m["pct_within_5px"] == pytest.approx(100 * 7 / 12)
    assert m["pct_within_10px"] == pytest.approx(100 * 7 / 12)
    assert m["pct_within_20px"] == pytest.approx(100 * 8 / 12)
    assert m["top_left_pct_within_5px"] == pytest.approx(100 / 3)
    assert m["pct_images_all_within_5px"] == pytest.approx(100 / 3)
    assert m["pct_images_all_within_20px"] == pytest.approx(200 / 3)
    assert m["mean_px"] == pytest.approx((4 * 3 + 12) / 8)     # over the corners that were found
    assert m["capped_mean_px"] == pytest.approx((4 * 3 + 12 + 4 * 50) / 12)
    assert m["false_positive_pct"] == pytest.approx(50.0)
    # A corner outside the frame is left out of every denominator, and counted.
    visible[1, 0] = False
    m = summarize(err, visible)
    assert m["corners"] == 11 and m["corners_outside_frame"] == 1
    assert m["pct_within_5px"] == pytest.approx(100 * 7 / 11)


def test_a_card_free_set_reports_its_false_alarms_alone():
    """A set of card-free frames (a false-alarm check) prints its one figure, not a table of NaN."""
    from corners.metrics import format_table

    m = summarize(np.zeros((0, 4)), np.zeros((0, 4), bool), negatives_found=np.array([False, True, False, False]))
    assert format_table(m) == "a card claimed on 25.00 % of 4 card-free images"
    # A split with cards and no card-free image has no false-alarm line (not "nan %").
    m = summarize(np.zeros((1, 4)), np.ones((1, 4), bool), negatives_found=np.zeros(0, bool))
    assert "card-free" not in format_table(m) and "nan" not in format_table(m)


def test_decode_weighted_corners_and_threshold():
    out = np.zeros((2, 17, 6), np.float32)
    out[:, 0:4] = np.array([240, 320, 200, 300], np.float32)[None, :, None]
    kp = np.concatenate([CARD + 0.5, np.ones((4, 1))], 1).reshape(-1)
    out[:, 5:] = kp[None, :, None]
    out[0, 4] = [0.1, 0.9, 0.85, 0.2, 0.0, 0.0]
    out[0, 5, 2] += 10.0                          # second anchor's x1 is 10 px off, with weight 0.85
    out[1, 4] = 0.1                               # nothing above the threshold
    corners, score, found = decode(out, conf=0.25)
    assert found.tolist() == [True, False] and score[0] == pytest.approx(0.9)
    assert corners[0, 0, 0] == pytest.approx(CARD[0, 0] + 10 * 0.85 / 1.75, abs=1e-4)
    np.testing.assert_allclose(corners[0, 1:], CARD[1:], atol=1e-4)


def _anchors(cards, scores, n=None):
    """output0 (1, 17, N): one anchor per (4, 2) pixel-centre card with its score, box from its corners."""
    n = n or len(cards)
    out = np.zeros((1, 17, n), np.float32)
    for i, (c, s) in enumerate(zip(cards, scores)):
        c = np.asarray(c, np.float64) + 0.5
        lo, hi = c.min(0), c.max(0)
        out[0, :4, i] = [*(lo + hi) / 2, *(hi - lo)]
        out[0, 4, i] = s
        out[0, 5:, i] = np.concatenate([c, np.ones((4, 1))], 1).reshape(-1)
    return out


def _turn(quad, degrees, pivot):
    a = np.radians(degrees)
    rot = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    return (quad - pivot) @ rot.T + pivot


def test_every_card_is_decoded_once_best_first():
    """Two touching cards, a third apart, each found by two anchors (the second's corners a little
    off, weighted in); a stray anchor of the first card with corners 40 px off (its box nearly the
    same) is the same card; empty slots are zero; the frame's card is the strong one nearest the centre."""
    from corners.metrics import MAX_CARDS, central_index, decode_cards_tensor, pick

    left = np.array([[40.0, 200], [180, 200], [180, 396], [40, 396]])
    right = left + [140, 0]                                    # touching: its left side is left's right side
    apart = left + [300, 250]
    stray = left.copy()
    stray[2] += [0, 40]
    stray[3] += [0, 38]
    cards = [left, left + [1, 0], right, right + [0, 1], apart, apart, stray]
    scores = [0.9, 0.88, 0.8, 0.79, 0.6, 0.3, 0.85]
    found, score = decode_cards_tensor(torch.from_numpy(_anchors(cards, scores).astype(np.float64)))
    assert found.shape == (1, MAX_CARDS, 4, 2)
    np.testing.assert_allclose(score[0, :3].numpy(), [0.9, 0.8, 0.6])
    assert (score[0, 3:] == 0).all() and (found[0, 3:] == 0).all()
    np.testing.assert_allclose(found[0, 0].numpy() - 0.5, left + [0.88 / 1.78, 0], atol=1e-6)
    np.testing.assert_allclose(found[0, 1].numpy() - 0.5, right + [0, 0.79 / 1.59], atol=1e-6)
    np.testing.assert_allclose(found[0, 2].numpy() - 0.5, apart, atol=1e-6)   # the 0.3 anchor is not >= 0.9 x 0.6
    # The frame's card: of the cards scoring at least half the best, the one nearest (240, 320).
    index = central_index(found, score)
    assert index.tolist() == [1]
    corners, best = pick(found, score, index)
    assert float(best[0]) == pytest.approx(0.8)


def test_overlapping_cards_of_a_fan_stay_apart():
    """Cards of a fan turned 10 degrees apart about a pivot below them: their boxes overlap far more
    than a box-IoU NMS would allow (IoU > 0.5), but their corners lie apart, so each is a card."""
    from corners.metrics import _box_iou, decode_cards_tensor

    base = np.array([[180.0, 150], [300, 150], [300, 318], [180, 318]])
    pivot = np.array([240.0, 420])
    fan = [_turn(base, a, pivot) for a in (-10, 0, 10)]
    out = torch.from_numpy(_anchors(fan, [0.7, 0.9, 0.8]).astype(np.float64))
    assert float(_box_iou(out[:, :4, 1:2], out[:, :4])[0, 0]) > 0.5
    _, score = decode_cards_tensor(out)
    np.testing.assert_allclose(score[0, :3].numpy(), [0.9, 0.8, 0.7])


def test_cards_are_matched_once_and_wrong_cards_counted():
    """Recall of the fully visible cards found within 5 px, precision, the right-card share (a quad
    spanning two cards is wrong), corners of matched cards, false cards on card-free frames."""
    from corners.metrics import match_cards, split_metrics, summarize_cards

    a = np.array([[40.0, 200], [180, 200], [180, 396], [40, 396]])
    b, c = a + [150, 0], a + [0, 220]
    truth = np.stack([a, b, c])
    span = np.stack([a[0], b[1], b[2], a[3]])                   # a and b as one quad
    pred = np.stack([a + [2, 0], c + [0, 9], span])             # a within 5 px, c 9 px off, the union
    match, cost = match_cards(pred, truth, np.ones((3, 4), bool))
    # Greedy, cheapest first: b is left with the union (150 px off), which is not b (wrong card).
    assert match.tolist() == [0, 2, 1] and cost.tolist() == pytest.approx([2, 150, 9])
    states = [np.array([[2, 2, 2, 2], [2, 2, 2, 2], [2, 2, 1, 2]])]   # c has a hidden corner
    m = summarize_cards([truth], [pred], states, negatives=[np.zeros((0, 4, 2)), a[None]])
    assert m["fully_visible_cards"] == 2 and m["recall_pct"] == pytest.approx(50.0)    # a of a and b
    assert m["recall_all_pct"] == pytest.approx(100 / 3)
    assert m["precision_pct"] == pytest.approx(100 / 3) and m["right_card_pct"] == pytest.approx(200 / 3)
    assert m["wrong_cards"] == 1 and m["matched_corners"] == 8
    assert m["matched_pct_within_5px"] == pytest.approx(50.0)
    assert m["false_cards"] == 1 and m["false_card_images_pct"] == pytest.approx(50.0)
    # A split of one-card, multi-card and card-free images: the flat figures are the one-card images',
    # scored on the single answer, as before several cards existed.
    one = a[None]
    m = split_metrics([one, truth, np.zeros((0, 4, 2))], np.stack([a + [1, 0], a, a]), np.array([True, True, False]),
                      [one, pred, np.zeros((0, 4, 2))])
    assert m["images"] == 1 and m["pct_within_5px"] == 100.0 and m["false_positive_pct"] == 0.0
    assert m["multi"]["cards"] == 3 and m["multi"]["wrong_cards"] == 1
    # Training watches every card: 4 corners at 1 px, a's at 2, c's at 9, b's two off by 150 px at the cap.
    assert m["validation_capped_mean_px"] == pytest.approx((4 * 1 + 4 * 2 + 4 * 9 + 2 * 50) / 16)


# ----------------------------------------------------------------------------- loss

def _kpt_loss_grad(loss, error_px, area_px=300.0 * 420.0, stride=8.0):
    """Gradient of the keypoint loss w.r.t. one corner's x, for a corner error_px off in x (grid units
    as Ultralytics passes them: pixels / stride). The other three corners are exact."""
    gt = torch.zeros(1, 4, 3)
    gt[..., 2] = 2.0
    pred = gt.clone()
    pred[0, 0, 0] = error_px / stride
    pred.requires_grad_(True)
    value = loss(pred, gt, gt[..., 2] != 0, torch.tensor([[area_px / stride**2]]))
    value.backward()
    return float(value.detach()), float(pred.grad[0, 0, 0]) / stride     # per px


def test_l1_term_pulls_as_hard_on_the_last_pixels_as_on_far_corners():
    from ultralytics.utils.loss import KeypointLoss

    from corners.data import LOSS_OKS_SIGMA
    from corners.loss import CornerKeypointLoss

    sigmas = torch.full((4,), LOSS_OKS_SIGMA)
    oks, ours, off = KeypointLoss(sigmas), CornerKeypointLoss(sigmas, 1.0), CornerKeypointLoss(sigmas, 0.0)
    for e in (1.0, 5.0, 50.0):
        assert _kpt_loss_grad(off, e) == pytest.approx(_kpt_loss_grad(oks, e))   # gain 0: Ultralytics' loss
    # Ultralytics' OKS loss at the 0.25 width hardly notices the last pixels: its pull at 2 px is a
    # twentieth of that at 40 px. The L1 term pulls the same at both, many times harder than OKS at 2 px.
    assert _kpt_loss_grad(oks, 2.0)[1] < 0.06 * _kpt_loss_grad(oks, 40.0)[1]
    l1_2 = _kpt_loss_grad(ours, 2.0)[1] - _kpt_loss_grad(oks, 2.0)[1]
    l1_40 = _kpt_loss_grad(ours, 40.0)[1] - _kpt_loss_grad(oks, 40.0)[1]
    assert l1_2 == pytest.approx(l1_40, rel=1e-4) and l1_2 > 20 * _kpt_loss_grad(oks, 2.0)[1]
    assert _kpt_loss_grad(ours, -2.0)[1] < 0 < _kpt_loss_grad(ours, 2.0)[1]       # towards the truth
    # A corner outside the frame (visibility 0) gets no pull at all.
    gt = torch.zeros(1, 4, 3)
    gt[0, 1:, 2] = 2.0
    pred = torch.full((1, 4, 3), 3.0, requires_grad=True)
    ours(pred, gt, gt[..., 2] != 0, torch.tensor([[2000.0]])).backward()
    assert pred.grad[0, 0].abs().sum() == 0 and pred.grad[0, 1:, :2].abs().sum() > 0

