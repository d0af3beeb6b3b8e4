import csv
import os
import shutil

import numpy as np
import pytest
import torch

import evaluate
import train
from common import DataError
from conftest import SEG_OPTIONS
from segmentation import evaluation
from segmentation.dataset import find_samples, load_sample
from segmentation.model import load_checkpoint_model


def _args(data, out, *extra):
    return train.get_args_parser().parse_args(["--data-path", data, "--output-dir", str(out), *SEG_OPTIONS, *extra])


def _validate(data, checkpoint):
    """train.py's validation of a checkpoint's weights on the run's validation images."""
    args = train.resolve_args(_args(data, os.path.dirname(checkpoint)))
    args.distributed, args.rank, args.world_size, args.local_rank = False, 0, 1, 0
    model, _ = load_checkpoint_model(checkpoint)
    _, _, val_data = train.build_datasets(args)
    return train.evaluate(model, train.make_loader(val_data, args, False, 0), args)


def test_training_writes_checkpoints_and_logs(segmentation_run, tiny_dataset):
    out = segmentation_run["output_dir"]
    for name in ("best.pt", "last.pt", "metrics.csv", "curves.png"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert os.listdir(os.path.join(out, "tensorboard"))
    rows = list(csv.DictReader(open(os.path.join(out, "metrics.csv"))))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    ckpt = torch.load(os.path.join(out, "last.pt"), weights_only=False)
    assert {"model", "optimizer", "lr_scheduler", "scaler", "epoch", "args", "best_iou", "bad_epochs"} <= set(ckpt)
    assert ckpt["epoch"] == 1
    # The logged metrics are the validation of the weights saved with them, not of some other state.
    measured = _validate(tiny_dataset, os.path.join(out, "last.pt"))
    for key in ("iou", "dice", "val_loss"):
        assert float(rows[-1][key]) == pytest.approx(measured[key], abs=1e-9), key
    # best.pt is the epoch with the highest logged IoU.
    best_epoch = int(np.argmax([float(r["iou"]) for r in rows]))
    best = torch.load(os.path.join(out, "best.pt"), weights_only=False)
    assert best["epoch"] == segmentation_run["best_epoch"] == best_epoch
    assert best["best_iou"] == pytest.approx(float(rows[best_epoch]["iou"]), abs=1e-12)


def test_resume_continues_exactly(segmentation_run, tiny_dataset, tmp_path):
    # The shared run kept last.pt as a run killed during epoch 1 would have left it.
    straight = segmentation_run
    killed = os.path.join(straight["output_dir"], "killed_after_epoch0.pt")
    assert torch.load(killed, weights_only=False)["epoch"] == 0
    resumed = train.main(_args(tiny_dataset, tmp_path / "b", "--epochs", "2", "--resume", killed))
    assert [r["epoch"] for r in resumed["history"]] == [0, 1]
    a = torch.load(os.path.join(straight["output_dir"], "last.pt"), weights_only=False)
    b = torch.load(tmp_path / "b" / "last.pt", weights_only=False)
    # Same schedule position, optimizer state and weights as the uninterrupted run.
    assert a["lr_scheduler"]["last_epoch"] == b["lr_scheduler"]["last_epoch"]
    for k, v in a["optimizer"]["state"].items():
        assert torch.allclose(v["exp_avg"], b["optimizer"]["state"][k]["exp_avg"], atol=1e-6)
    for k, v in a["model"].items():
        if v.is_floating_point():
            assert torch.allclose(v, b["model"][k], atol=1e-5), k
    assert straight["history"][-1]["iou"] == pytest.approx(resumed["history"][-1]["iou"], abs=1e-6)


@pytest.mark.parametrize("workers", ["0", "2"])
def test_augmentations_are_reproducible(tiny_dataset, tmp_path, workers):
    # Albumentations seeds a new Compose from OS entropy; every training loader (training, resume,
    # pruning's calibration and fine-tuning) must still draw the same batches run after run.
    def first_batch(epoch):
        args = train.resolve_args(_args(tiny_dataset, tmp_path, "--workers", workers))
        args.distributed = False
        _, train_data, _ = train.build_datasets(args)   # a fresh, unseeded Compose each time
        return next(iter(train.make_loader(train_data, args, True, epoch)))[0]

    assert torch.equal(first_batch(3), first_batch(3))
    assert not torch.equal(first_batch(3), first_batch(4))


def test_early_stopping_stops(tiny_dataset, tmp_path):
    # lr 0: nothing can improve after the first epoch, so patience 1 stops after epoch 1.
    result = train.main(_args(tiny_dataset, tmp_path, "--epochs", "6", "--lr", "0", "--patience", "1"))
    assert result["stopped_early"] and len(result["history"]) == 2
    # A resumed run that already ran out of patience does not train again.
    again = train.main(_args(tiny_dataset, tmp_path, "--epochs", "6", "--lr", "0", "--patience", "1",
                             "--resume", str(tmp_path / "last.pt")))
    assert len(again["history"]) == 2


def test_low_res_epochs_then_full(tiny_dataset, tmp_path):
    result = train.main(_args(tiny_dataset, tmp_path, "--epochs", "2", "--low-res-epochs", "1", "--size", "128", "96"))
    assert [(r["height"], r["width"]) for r in result["history"]] == [(64, 48), (128, 96)]


def test_recipe_defaults_and_explicit_flags_win(tmp_path):
    args = train.resolve_args(train.get_args_parser().parse_args(["--recipe", "cpu", "--epochs", "3"]))
    assert args.epochs == 3 and args.low_res_epochs == train.RECIPES["cpu"]["low_res_epochs"]
    assert args.amp_dtype == (torch.float16 if torch.cuda.is_available() else torch.bfloat16)


def test_evaluate_checkpoint_writes_json_and_overlays(segmentation_run, tiny_dataset, tmp_path):
    ckpt = str(tmp_path / "best.pt")
    shutil.copy(os.path.join(segmentation_run["output_dir"], "best.pt"), ckpt)
    args = evaluate.get_args_parser().parse_args(
        [ckpt, "--data-path", tiny_dataset, "--limit", "3", "--overlays", "2", "--quiet"])
    result = evaluate.main(args)
    assert (tmp_path / "best_test_metrics.json").is_file()
    assert len(os.listdir(tmp_path / "best_overlays")) == 2
    # The card IoU of the model's own thresholded output, pooled over the first 3 test images, and
    # each image's IoU for the worst one.
    model, _ = load_checkpoint_model(ckpt)
    inter = union = 0
    per_image = []
    for image_path, mask_path in find_samples(tiny_dataset, "test")[:3]:
        image, truth = load_sample(image_path, mask_path)
        with torch.no_grad():
            logits = model(torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255)
        pred, card = logits.softmax(1)[0, 1].numpy() >= 0.5, truth == 1
        inter, union = inter + (pred & card).sum(), union + (pred | card).sum()
        per_image.append((pred & card).sum() / (pred | card).sum() if (pred | card).any() else 1.0)
    assert result["images"] == 3 and union > 0
    assert result["iou"] == pytest.approx(inter / union, abs=1e-6)
    assert result["min_image_iou"] == pytest.approx(min(per_image), abs=1e-6)


def test_evaluate_overlays_are_the_worst_images(tiny_dataset, tmp_path, monkeypatch):
    """--overlays draws the images with the most wrong pixels, worst first, not the first images
    of the split; the JSON lists them with their counts; ranked files of an earlier run go."""
    samples = find_samples(tiny_dataset, "test")[:4]
    truths = [load_sample(i, m)[1] for i, m in samples]
    assert all(t.any() and not t.all() for t in truths[::2])
    # Per image in split order: all background (wrong = the card), exact, all card (wrong = the
    # background), exact. Keeping 2, the exact image 1 is taken in and then pushed out by image 2.
    answers = iter([np.zeros_like(truths[0]), truths[1], np.ones_like(truths[2]), truths[3]])
    monkeypatch.setattr(evaluation, "load_predictor", lambda *a, **k: lambda image: next(answers).astype(np.float32))
    monkeypatch.setattr(evaluation, "WORST_LISTED", 0)
    out = tmp_path / "ov"
    out.mkdir()
    (out / "01_from_an_earlier_run.jpg").write_bytes(b"")
    (out / "notes.txt").write_text("kept")
    result = evaluation.evaluate_model("stub.onnx", tiny_dataset, limit=4, overlays=2, overlay_dir=str(out), quiet=True)
    wrong = {0: int(truths[0].sum()), 2: int((1 - truths[2]).sum())}
    order = sorted(wrong, key=lambda i: -wrong[i])
    stems = [os.path.splitext(os.path.basename(samples[i][0]))[0] for i in order]
    assert sorted(os.listdir(out)) == [f"01_{stems[0]}.jpg", f"02_{stems[1]}.jpg", "notes.txt"]
    listed = result["worst_images"]
    assert [w["image"] for w in listed] == [os.path.basename(samples[i][0]) for i in order]
    assert [w["wrong_pixels"] for w in listed] == [wrong[i] for i in order]
    assert [w["iou"] for w in listed] == [pytest.approx(float(truths[2].mean()) if i == 2 else 0.0) for i in order]
    with pytest.raises(DataError, match="--overlays must be 0 or more"):
        evaluate.main(evaluate.get_args_parser().parse_args(["stub.onnx", "--overlays", "-1"]))


def test_bad_dataset_path_is_a_clear_error(tmp_path):
    from common import DataError
    with pytest.raises(DataError, match="generate"):
        train.main(_args(str(tmp_path / "missing"), tmp_path / "out", "--epochs", "1"))


def _conv_layout(model):
    return [(m.stride, m.dilation, m.padding) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]


def test_output_stride_32_fine_tunes_from_a_stride_16_checkpoint(segmentation_run, tiny_dataset, tmp_path):
    """--output-stride 32 --weights: the same weights in torchvision's undilated layout, kept through the
    checkpoint (export and evaluation rebuild it), and the model is cheaper."""
    from onnx_utils import conv_macs
    from segmentation.export import to_onnx
    from segmentation.model import build_model, output_stride

    source = os.path.join(segmentation_run["output_dir"], "best.pt")
    train.main(_args(tiny_dataset, tmp_path / "os32", "--epochs", "1", "--weights", source, "--output-stride", "32"))
    model, ckpt = load_checkpoint_model(str(tmp_path / "os32" / "best.pt"))
    assert output_stride(model) == 32 and ckpt["args"]["output_stride"] == 32
    assert _conv_layout(model) == _conv_layout(build_model(False, output_stride=32))
    # Fine-tuned from the source: a weight of the first layer moved little, it was not re-initialised.
    before, _ = load_checkpoint_model(source)
    w0, w1 = before.net.backbone["0"][0].weight, model.net.backbone["0"][0].weight
    assert (w1 - w0).abs().max() < 0.1 * w0.abs().max()
    paths = [str(tmp_path / "os16.onnx"), str(tmp_path / "os32.onnx")]
    to_onnx(before, paths[0], fp16=False)
    to_onnx(model, paths[1], fp16=False)
    assert conv_macs(paths[1]) < 0.7 * conv_macs(paths[0])
    # A stride-32 checkpoint cannot go back to 16.
    with pytest.raises(train.ScriptError, match="output stride 32"):
        train.main(_args(tiny_dataset, tmp_path / "back", "--epochs", "1", "--weights",
                         str(tmp_path / "os32" / "best.pt"), "--output-stride", "16"))


def test_reduced_tail_keeps_the_matching_weights(segmentation_run, tiny_dataset, tmp_path):
    source = os.path.join(segmentation_run["output_dir"], "best.pt")
    train.main(_args(tiny_dataset, tmp_path / "rt", "--epochs", "1", "--weights", source, "--reduced-tail"))
    model, ckpt = load_checkpoint_model(str(tmp_path / "rt" / "best.pt"))
    before, _ = load_checkpoint_model(source)
    assert ckpt["args"]["reduced_tail"] is True
    assert sum(p.numel() for p in model.parameters()) < 0.8 * sum(p.numel() for p in before.parameters())
    # The early layers (same shapes) came from the source.
    w0, w1 = before.net.backbone["1"].block[0][0].weight, model.net.backbone["1"].block[0][0].weight
    assert (w1 - w0).abs().max() < 0.1 * w0.abs().max()
