import csv
import os

import pytest
import torch

import evaluate
import train


def _args(data, out, *extra):
    return train.get_args_parser().parse_args(
        ["--data-path", data, "--output-dir", str(out), "--size", "64", "48", "--batch-size", "4",
         "--val-batch-size", "4", "--max-train-images", "8", "--max-val-images", "4", "--workers", "0",
         "--no-pretrained", "--quiet", "--device", "cpu", "--threads", "2", *extra])


def test_training_writes_checkpoints_and_logs(tiny_dataset, tmp_path):
    result = train.main(_args(tiny_dataset, tmp_path, "--epochs", "2"))
    for name in ("best.pt", "last.pt", "metrics.csv", "curves.png"):
        assert (tmp_path / name).is_file(), name
    assert os.listdir(tmp_path / "tensorboard")
    rows = list(csv.DictReader(open(tmp_path / "metrics.csv")))
    assert [int(r["epoch"]) for r in rows] == [0, 1]
    assert 0 <= float(rows[-1]["iou"]) <= 1
    ckpt = torch.load(tmp_path / "last.pt", weights_only=False)
    assert {"model", "optimizer", "lr_scheduler", "scaler", "epoch", "args", "best_iou", "bad_epochs"} <= set(ckpt)
    assert ckpt["epoch"] == 1 and result["best_epoch"] in (0, 1)


def test_resume_continues_exactly(tiny_dataset, tmp_path, monkeypatch):
    saved = train.atomic_torch_save

    def save_and_keep_epoch0(obj, path):
        # Keep the state a run killed during epoch 1 would have left behind.
        saved(obj, path)
        if os.path.basename(path) == "last.pt" and obj["epoch"] == 0:
            saved(obj, os.path.join(os.path.dirname(path), "killed_after_epoch0.pt"))

    monkeypatch.setattr(train, "atomic_torch_save", save_and_keep_epoch0)
    straight = train.main(_args(tiny_dataset, tmp_path / "a", "--epochs", "2"))
    first = torch.load(tmp_path / "a" / "killed_after_epoch0.pt", weights_only=False)
    assert first["epoch"] == 0
    resumed = train.main(_args(tiny_dataset, tmp_path / "b", "--epochs", "2", "--resume",
                               str(tmp_path / "a" / "killed_after_epoch0.pt")))
    assert [r["epoch"] for r in resumed["history"]] == [0, 1]
    a = torch.load(tmp_path / "a" / "last.pt", weights_only=False)
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


def test_evaluate_checkpoint_writes_json_and_overlays(tiny_dataset, tmp_path):
    train.main(_args(tiny_dataset, tmp_path, "--epochs", "1"))
    args = evaluate.get_args_parser().parse_args(
        [str(tmp_path / "best.pt"), "--data-path", tiny_dataset, "--limit", "3", "--overlays", "2", "--quiet"])
    result = evaluate.main(args)
    assert result["images"] == 3 and 0 <= result["iou"] <= 1
    assert (tmp_path / "best_test_metrics.json").is_file()
    assert len(os.listdir(tmp_path / "best_overlays")) == 2


def test_bad_dataset_path_is_a_clear_error(tmp_path):
    from common import DataError
    with pytest.raises(DataError, match="generate"):
        train.main(_args(str(tmp_path / "missing"), tmp_path / "out", "--epochs", "1"))
