"""train_corners.py and its trainer: one epoch end to end, resume options, warmup, and the
corner-error LR plateau that survives a resume."""

import json
import math
import os

import pytest
import torch

from conftest import CARD, read_csv, write_dataset


def test_one_epoch_cpu_training_logs_corner_metrics(trained_corners, corner_dataset):
    """The logged corner metrics are those of the trained model on the test split, as
    evaluate_corners.py measures the saved weights: computed, not placeholders, and on the right split."""
    from evaluate_corners import evaluate_corner_model

    assert os.path.isfile(trained_corners["best"]) and os.path.isfile(trained_corners["last"])
    rows = read_csv(os.path.join(trained_corners["save_dir"], "results.csv"))
    assert len(rows) == 1
    assert float(rows[0]["corners/lr_factor"]) == 1.0
    measured, _ = evaluate_corner_model(trained_corners["last"], corner_dataset, quiet=True, refine=False)
    assert measured["corners"] > 0
    for key in ("capped_mean_px", "mean_px", "median_px", "pct_within_5px", "pct_within_10px", "pct_within_20px",
                "pct_images_all_within_5px", "missed_cards", "false_positive_pct"):
        logged = float(rows[0][f"corners/{key}"])
        # last.pt holds the FP16 copy of the FP32 EMA weights the validation scored.
        assert logged == pytest.approx(measured[key], rel=1e-2, abs=0.1, nan_ok=True), (key, logged, measured[key])
    assert os.listdir(os.path.join(trained_corners["save_dir"], "tensorboard"))
    with open(os.path.join(trained_corners["save_dir"], "corner_options.json")) as f:
        assert json.load(f)["data_root"] == os.path.realpath(corner_dataset), "what --resume reads back"


def test_resume_reuses_the_saved_loss_gain_and_old_runs_keep_ultralytics_loss():
    import train_corners

    saved = {k: 7 for k in train_corners.TRAINER_OPTIONS} | {"data_root": "/d", "kpt_l1_gain": 0.5}
    assert train_corners.saved_trainer_options(saved)["kpt_l1_gain"] == 0.5
    del saved["kpt_l1_gain"]    # a run from before the L1 term trained with Ultralytics' loss alone
    assert train_corners.saved_trainer_options(saved) == {**{k: 7 for k in train_corners.TRAINER_OPTIONS},
                                                          "kpt_l1_gain": 0.0}


def test_warmup_only_from_scratch_unless_asked():
    import train_corners

    def warmup(*argv):
        return train_corners.warmup_epochs(train_corners.get_args_parser().parse_args(list(argv)))

    assert warmup() == train_corners.WARMUP_EPOCHS_FROM_SCRATCH > 0
    assert warmup("--weights", "x.pt") == 0.0          # no bias-LR kick to a trained checkpoint
    assert warmup("--weights", "x.pt", "--warmup-epochs", "1") == 1.0


def _lf(epoch, epochs, lrf=0.01):
    """Ultralytics' cosine schedule (cos_lr=True), as in ultralytics.utils.one_cycle."""
    return ((1 - math.cos(epoch * math.pi / epochs)) / 2) * (lrf - 1) + 1


class Crash(Exception):
    pass


def test_plateau_lowers_the_lr_the_optimizer_uses_and_survives_resume(tmp_path):
    """min_delta so large that no epoch counts as a gain: with patience 0 every epoch after the first
    halves the LR. Epoch 3 must run at 0.5x Ultralytics' schedule; a run killed after epoch 3 and
    resumed must run epoch 4 at 0.25x, not at the schedule's own value. The LR bookkeeping does not
    depend on the pictures: four black training frames (one batch per epoch) and one to validate."""
    from ultralytics import YOLO

    from corners.data import build_pose_dataset as build
    from corners.trainer import make_trainer

    data = write_dataset(tmp_path / "ds", {f"{i}.jpg": CARD.tolist() for i in range(4)})
    yaml_path = build(data, str(tmp_path / "cache"))
    base = make_trainer(data, plateau_patience=0, plateau_factor=0.5, min_lr_factor=0.01,
                        stop_patience=100, min_delta=1e9, kpt_l1_gain=0.5)

    class CrashingTrainer(base):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.add_callback("on_fit_epoch_end", self._crash)

        @staticmethod
        def _crash(trainer):
            if trainer.epoch == 2:       # after epoch 3 was validated and saved
                raise Crash()

    lr0, epochs = 0.01, 4
    common = dict(data=yaml_path, epochs=epochs, batch=4, imgsz=640, device="cpu", workers=0, optimizer="AdamW",
                  lr0=lr0, warmup_epochs=0, cos_lr=True, plots=False, val=True, patience=0, verbose=False,
                  project=str(tmp_path / "runs"), name="plateau", seed=0, augmentations=[], mosaic=0.0)
    with pytest.raises(Crash):
        YOLO("yolo12n-pose.yaml", task="pose").train(trainer=CrashingTrainer, **common)
    save_dir = tmp_path / "runs" / "plateau"
    rows = read_csv(save_dir / "results.csv")
    assert len(rows) == 3
    for i, want in enumerate([1.0, 1.0, 0.5]):   # factor in force during epochs 1, 2, 3
        assert float(rows[i]["lr/pg0"]) == pytest.approx(lr0 * _lf(i, epochs) * want, rel=1e-3), i
    assert float(rows[2]["corners/lr_factor"]) == 0.25   # decided after epoch 3, applies to epoch 4
    ckpt = torch.load(save_dir / "weights" / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt["optimizer"]["param_groups"][0]["corner_plateau"]["factor"] == 0.25

    resumed = YOLO(str(save_dir / "weights" / "last.pt"), task="pose")
    resumed.train(resume=True, data=yaml_path, trainer=base, device="cpu", workers=0)
    rows = read_csv(save_dir / "results.csv")
    assert len(rows) == 4
    assert float(rows[3]["lr/pg0"]) == pytest.approx(lr0 * _lf(3, epochs) * 0.25, rel=1e-3)
    # The resumed run trained with our keypoint loss too (corners/loss.py), at the gain it was given.
    from ultralytics.utils.torch_utils import unwrap_model

    from corners.loss import CornerKeypointLoss
    criterion = unwrap_model(resumed.trainer.model).criterion
    assert isinstance(criterion.keypoint_loss, CornerKeypointLoss) and criterion.keypoint_loss.l1_gain == 0.5

