"""calibrate.py: the offset it finds is the IoU optimum on the split, it lands in the model as an exact
shift of the logit difference, and bad input gets a clear error."""

import json
import os

import cv2
import numpy as np
import pytest
import torch

import calibrate
import model_card
import train
from common import CARD_CLASS, RUN_STATE_KEYS, DataError, public_command, public_path
from conftest import SEG_OPTIONS
from segmentation import calibration
from segmentation import export as segmentation_export
from segmentation.dataset import find_samples, load_sample
from segmentation.evaluation import evaluate_model
from segmentation.model import load_checkpoint_model


@pytest.fixture(scope="module")
def trained(segmentation_run):
    return os.path.join(segmentation_run["output_dir"], "best.pt")


def _run(argv):
    return calibrate.main(calibrate.get_args_parser().parse_args(argv))


def _logit_difference(model, x):
    with torch.inference_mode():
        out = model(x)
    return out[:, CARD_CLASS] - out[:, 1 - CARD_CLASS]


class BrightnessSegmenter(torch.nn.Module):
    """The part of LR-ASPP calibrate.py touches (net.classifier.low_classifier, its card bias), on a
    known rule: card-minus-background logit = SLOPE * mean brightness + BIAS (values no 0.01 grid
    hits exactly, so torch and numpy agree on which side of every candidate boundary a pixel is)."""

    SLOPE, BIAS = 7.77, -3.8831

    def __init__(self):
        super().__init__()
        self.net = torch.nn.Module()
        self.net.classifier = torch.nn.Module()
        self.net.classifier.low_classifier = conv = torch.nn.Conv2d(1, 2, 1)
        with torch.no_grad():
            conv.weight.zero_()
            conv.weight[CARD_CLASS] = self.SLOPE
            conv.bias.zero_()
            conv.bias[CARD_CLASS] = self.BIAS

    def forward(self, x):
        return self.net.classifier.low_classifier(x.mean(1, keepdim=True))


@pytest.fixture
def overlapping_data(tmp_path):
    """3 frames whose card and background brightness overlap (card 80..255, background 0..180), so
    the best boundary is neither 0.5 nor at the limits."""
    rng = np.random.default_rng(0)
    root = tmp_path / "data"
    for sub in ("images", "masks"):
        os.makedirs(root / "test" / sub)
    for i in range(3):
        mask = np.zeros((640, 480), np.uint8)
        mask[100 + 40 * i:500, 80:400 - 30 * i] = 255
        grey = np.where(mask > 0, rng.uniform(80, 255, mask.shape), rng.uniform(0, 180, mask.shape))
        cv2.imwrite(str(root / "test" / "images" / f"f{i}.jpg"), np.repeat(grey[..., None], 3, 2).astype(np.uint8))
        cv2.imwrite(str(root / "test" / "masks" / f"f{i}.png"), mask)
    return str(root)


def test_offset_is_the_iou_optimum_and_an_exact_shift(overlapping_data, tmp_path):
    ckpt_path, out = str(tmp_path / "stub.pt"), str(tmp_path / "calibrated.pt")
    torch.save({"model_object": BrightnessSegmenter(), "args": {}}, ckpt_path)
    result = _run([ckpt_path, "--data-path", overlapping_data, "--output", out, "--quiet"])

    # Brute force on the same frames: every offset of the grid, IoU at the 0.5 boundary.
    d, truth = [], []
    for img_path, mask_path in find_samples(overlapping_data, "test"):
        image, t = load_sample(img_path, mask_path)
        m = image.astype(np.float32).mean(2) / 255
        d.append((BrightnessSegmenter.SLOPE * m + BrightnessSegmenter.BIAS).ravel())
        truth.append(t.astype(bool).ravel())
    d, truth = np.concatenate(d), np.concatenate(truth)
    offsets = np.round(np.arange(-200, 201) * 0.01, 2)
    ious = [((d + o >= 0) & truth).sum() / ((d + o >= 0) | truth).sum() for o in offsets]
    best = offsets[int(np.argmax(ious))]
    assert abs(best) > 0.1   # the data make 0.5 the wrong boundary
    assert result["offset"] == pytest.approx(best, abs=0.011)
    assert result["iou_before"] == pytest.approx(ious[200], abs=1e-5)
    assert result["iou_after"] == pytest.approx(max(ious), abs=1e-5)

    # In the model: every pixel's card-minus-background logit moves by exactly the offset, and
    # evaluate.py at the 0.5 boundary measures what calibrate.py reported.
    before, _ = load_checkpoint_model(ckpt_path)
    after, saved = load_checkpoint_model(out)
    x = torch.rand(1, 3, 16, 12)
    diff = _logit_difference(after, x) - _logit_difference(before, x)
    assert torch.allclose(diff, torch.full_like(diff, result["offset"]), atol=1e-5)
    assert evaluate_model(out, overlapping_data, quiet=True)["iou"] == pytest.approx(result["iou_after"], abs=1e-5)
    record = saved["calibration"]
    assert record["images"] == 3 and record["split"] == "test" and not record["validation"]
    # Its 0.5 boundary is where the model as trained said sigmoid(-offset).
    assert record["trained_probability_threshold"] == pytest.approx(1 / (1 + np.exp(result["offset"])))

    # Calibrating the calibrated model moves it by at most one step; the record adds offsets up.
    again_path = str(tmp_path / "again.pt")
    again = _run([out, "--data-path", overlapping_data, "--output", again_path, "--quiet"])
    assert abs(again["offset"]) <= 0.011
    record = torch.load(again_path, weights_only=False)["calibration"]
    assert record["card_logit_offset"] == pytest.approx(result["offset"] + again["offset"])
    assert record["iou_before"] == pytest.approx(result["iou_before"])   # the model as trained


def test_a_trained_checkpoint_keeps_its_training_record(trained, tiny_dataset, tmp_path):
    bias = "net.classifier.low_classifier.bias"
    # The tiny run's model calls most pixels card; with its card bias 20 lower it calls none, so
    # the offset that restores it is far from 0 and must reach the saved state dict.
    source = torch.load(trained, weights_only=False)
    source["model"][bias][CARD_CLASS] -= 20
    start, out = str(tmp_path / "start.pt"), str(tmp_path / "calibrated.pt")
    torch.save(source, start)
    # Without --data-path / --split: the run's own validation split.
    result = _run([start, "--output", out, "--max-offset", "30", "--quiet"])
    assert result["offset"] > 1 and result["iou_after"] > result["iou_before"]
    saved = torch.load(out, weights_only=False)
    # A release records no folders of the machine it was made on: outside the repository, names only.
    assert saved["calibration"]["data_path"] == os.path.basename(tiny_dataset) == public_path(tiny_dataset)
    assert saved["calibration"]["validation"] and result["images"] == 12
    assert saved["history"] == source["history"]
    assert saved["args"] == {k: public_path(v) if isinstance(v, str) else v for k, v in source["args"].items()}
    assert saved["args"]["output_dir"] != source["args"]["output_dir"] and not os.path.isabs(saved["args"]["data_path"])
    assert not any(os.path.isabs(word) for word in saved["command"].split())
    assert saved["command"] == public_command(source["command"])
    assert saved["calibration"]["card_logit_offset"] == result["offset"]
    # Calibrating the release again (as after averaging): its recorded data folder, a name only, is
    # not a folder here, which is one clear line, not the wrong data.
    with pytest.raises(DataError, match=f"calibrated.pt: its validation data {os.path.basename(tiny_dataset)} is "
                                        "not on this machine; pass --data-path"):
        _run([out, "--output", str(tmp_path / "again.pt"), "--quiet"])
    # A release, not a run to resume: the optimizer state goes, and --resume says what to do instead.
    assert set(RUN_STATE_KEYS) <= set(source) and not set(RUN_STATE_KEYS) & set(saved)
    with pytest.raises(DataError, match="calibrated.pt: no optimizer and schedule state to resume.*--weights"):
        train.main(train.get_args_parser().parse_args(["--data-path", tiny_dataset, "--resume", out, *SEG_OPTIONS]))
    state, old = saved["model"], source["model"]
    assert torch.allclose(state[bias] - old[bias], torch.tensor([0.0, result["offset"]])[[1 - CARD_CLASS, CARD_CLASS]])
    assert all(torch.equal(state[k], old[k]) for k in old if k != bias)


def test_iou_per_offset_counts_pixels_at_or_above_each_edge():
    edges = torch.tensor([-1.0, 0.0, 1.0])
    d = torch.tensor([-2.0, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0])
    truth = torch.tensor([False, False, True, True, True, True, False])
    bins = torch.bucketize(d, edges, right=True)
    card = torch.bincount(bins[truth], minlength=4)
    background = torch.bincount(bins[~truth], minlength=4)
    iou = calibration.iou_per_offset(card, background)
    for j, edge in enumerate(edges):
        pred = d >= edge
        expected = (pred & truth).sum() / (pred | truth).sum()
        assert iou[j].item() == pytest.approx(expected.item())


def test_the_model_card_says_the_export_is_calibrated(trained, tiny_dataset, tmp_path):
    out = str(tmp_path / "calibrated.pt")
    _run([trained, "--data-path", tiny_dataset, "--output", out, "--quiet"])
    summary = segmentation_export.checkpoint_summary(load_checkpoint_model(out)[1])
    meta = {"name": "card_segmentation", "files": [], "machine": "m", "onnxruntime": "x", "export_command": "c",
            "training": summary}
    (tmp_path / "cards").mkdir()
    (tmp_path / "cards" / "m.json").write_text(json.dumps(meta))
    assert "card boundary calibrated (`train/calibrate.py`)" in model_card.render_model_card(str(tmp_path / "cards"))


def test_bad_input_is_a_clear_error(trained, tmp_path):
    # A split without card pixels: nothing to put the boundary on.
    for sub in ("images", "masks"):
        os.makedirs(tmp_path / "data" / "test" / sub)
    cv2.imwrite(str(tmp_path / "data" / "test" / "images" / "a.jpg"), np.zeros((640, 480, 3), np.uint8))
    cv2.imwrite(str(tmp_path / "data" / "test" / "masks" / "a.png"), np.zeros((640, 480), np.uint8))
    with pytest.raises(DataError, match="no card pixels"):
        _run([trained, "--data-path", str(tmp_path / "data"), "--output", str(tmp_path / "o.pt"), "--quiet"])
    with pytest.raises(DataError, match="--step"):
        _run([trained, "--data-path", str(tmp_path / "data"), "--step", "0"])
    not_a_checkpoint = tmp_path / "x.pt"
    not_a_checkpoint.write_text("hello")
    with pytest.raises(DataError, match="x.pt"):
        _run([str(not_a_checkpoint), "--data-path", str(tmp_path / "data")])
