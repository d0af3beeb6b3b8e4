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

