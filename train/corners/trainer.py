"""Ultralytics PoseTrainer for the corner model: our augmentation, corner-pixel validation,
LR plateau and early stopping.

Why a trainer subclass rather than callbacks alone:
- Ultralytics saves last.pt/best.pt *before* `on_fit_epoch_end`, so an LR change made in a
  callback would be missing from the checkpoint a resume starts from. validate() runs before the
  save, so the plateau decision is taken there and lands in the saved optimizer.
- validate() also sets `fitness`, which picks best.pt: here it is minus the capped mean corner
  error, not pose mAP.

The LR plateau has to survive Ultralytics' own schedule: every epoch `scheduler.step()` sets
lr = base_lrs[i] * lf(epoch) and warmup interpolates towards initial_lr * lf(epoch). A reduction
therefore scales a group's `initial_lr` and `lr` and the scheduler's `base_lrs`; at each epoch
start base_lrs is re-synced from initial_lr, which the optimizer state carries through a resume.
The plateau's own counters live in the first param group for the same reason.
"""

from __future__ import annotations

import json
import logging
import math
import os

import numpy as np
import torch
from ultralytics.data import utils as ul_data_utils
from ultralytics.data.augment import Compose, LetterBox
from ultralytics.data.dataset import YOLODataset
from ultralytics.engine import trainer as ul_trainer
from ultralytics.models.yolo.pose import PoseTrainer
from ultralytics.utils import USER_CONFIG_DIR, colorstr
from ultralytics.utils import plotting as ul_plotting
from ultralytics.utils.torch_utils import unwrap_model

from common import IMAGE_HEIGHT, IMAGE_WIDTH, atomic_write_bytes, open_tensorboard
from corners.augment import augment, get_corner_transforms
from corners.data import KPT_L1_GAIN, LOSS_OKS_SIGMA, NUM_CORNERS, box_from_corners, corner_samples, in_frame
from corners.loss import CornerPoseLoss
from corners.predict import evaluate_runner, torch_runner

logger = logging.getLogger(__name__)

PLATEAU_KEY = "corner_plateau"   # dict stored in optimizer.param_groups[0]
OPTIONS_FILE = "corner_options.json"   # next to weights/: what --resume needs to rebuild this trainer


def _check_amp_offline(model) -> bool:
    """Ultralytics' AMP check downloads yolo26n.pt; nothing here may reach for the network. AMP is
    on for CUDA (FP16 autocast + GradScaler, as for the segmentation model) and off on the CPU."""
    return next(model.parameters()).device.type == "cuda"


ul_trainer.check_amp = _check_amp_offline


def _local_font(font: str = "Arial.ttf"):
    """Ultralytics' check_font without its download: its dataset check calls it on every training
    run and, with the font absent, sends a HEAD request to github.com (YOLO_OFFLINE does not stop
    it). Looks where Ultralytics looks locally (its config folder, matplotlib's font list); with
    None, Ultralytics' plotting falls back to PIL's default font."""
    from matplotlib import font_manager

    path = USER_CONFIG_DIR / os.path.basename(font)
    if path.exists():
        return path
    found = [f.fname for f in font_manager.fontManager.ttflist if font in f.fname and os.path.exists(f.fname)]
    return found[0] if found else None


ul_data_utils.check_font = _local_font
ul_plotting.check_font = _local_font


class CornerPoseDataset(YOLODataset):
    """YOLODataset that runs the corner Albumentations pipeline on the original image first."""

    def __init__(self, *args, corner_transform=None, true_corners: dict | None = None, **kwargs):
        """true_corners: image file name -> (N, 4, 2) annotated corners of its cards. The label files
        store an out-of-frame corner clipped onto the border, which is no place to transform from (and
        clipping can change which corner has the smallest x + y, so re-sorting would rename the
        visible ones); the augmentation starts from the annotation instead."""
        self.corner_transform = corner_transform
        self.true_corners = true_corners or {}
        self._worker_seed = None
        super().__init__(*args, **kwargs)

    def build_transforms(self, hyp):
        """Training batches keep the 480x640 portrait frame the model is exported for. Ultralytics
        would letterbox onto a 640x640 canvas with grey bars that the exported model never sees
        (measured: the same weights scored 13.0 px mean error on letterboxed frames and 18.3 px on
        plain ones). Its affine, mosaic, flip and HSV steps are not needed: corners/augment.py did them."""
        transforms = super().build_transforms(hyp)
        if self.augment:
            fmt = transforms.transforms[-1]    # Ultralytics' Format step: tensors, normalised labels
            transforms = Compose([LetterBox(new_shape=(IMAGE_HEIGHT, IMAGE_WIDTH), scaleup=False), fmt])
        return transforms

    def update_labels_info(self, label: dict) -> dict:
        if self.augment and self.corner_transform is not None:
            label = self._augment(label)
        return super().update_labels_info(label)

    def _reseed_in_worker(self) -> None:
        """Every DataLoader worker holds a copy of the parent's Compose, random state included, and
        Ultralytics' worker seeding covers numpy and random but not Albumentations' own generators:
        without this, all workers drew the same augmentations in the same order. worker_info.seed
        is base seed + worker id, from the loader's seeded generator, so runs are reproducible."""
        info = torch.utils.data.get_worker_info()
        if info is not None and info.seed != self._worker_seed:
            self.corner_transform.set_random_seed(info.seed % 2 ** 32)
            self._worker_seed = info.seed

    def _augment(self, label: dict) -> dict:
        self._reseed_in_worker()
        img = label["img"]                                   # (h, w, 3) uint8 BGR, as Ultralytics loads it
        h, w = img.shape[:2]
        kpts = label.get("keypoints")                        # (N, K, 3) normalised continuous coordinates
        corners = known = None
        if kpts is not None and len(kpts):
            true = self.true_corners.get(os.path.basename(label["im_file"]))
            # The label file holds the annotated cards in order (build_pose_dataset), unless a card
            # left no box in the frame and was dropped: then the counts differ.
            if true is not None and len(kpts) == len(true) and label["ori_shape"] == (h, w):
                corners, known = true, np.ones((len(true), NUM_CORNERS), bool)
            else:   # not from our annotations: only what the label file says is trustworthy
                corners = kpts[..., :2] * np.array([w, h]) - 0.5
                known = kpts[..., 2] > 0
        rgb, moved, known = augment(self.corner_transform, img[..., ::-1].copy(), corners, known)
        label["img"] = np.ascontiguousarray(rgb[..., ::-1])
        if moved is None:
            return label
        boxes, new_kpts, keep = [], [], []
        for i, c in enumerate(moved):
            box = box_from_corners(c, w, h)
            if box is None:          # the card left the frame: this image is now background
                continue
            vis = in_frame(c, w, h) & known[i]
            xy = np.stack([np.clip(c[:, 0] + 0.5, 0, w) / w, np.clip(c[:, 1] + 0.5, 0, h) / h], 1)
            boxes.append(box)
            new_kpts.append(np.concatenate([xy, np.where(vis, 2.0, 0.0)[:, None]], 1))
            keep.append(i)
        label["cls"] = label["cls"][keep]
        label["bboxes"] = np.array(boxes, np.float32).reshape(-1, 4)
        label["keypoints"] = np.array(new_kpts, np.float32).reshape(-1, NUM_CORNERS, 3)
        return label


def make_trainer(data_root: str, aug_strength: float = 1.0, plateau_patience: int = 5, plateau_factor: float = 0.5,
                 min_lr_factor: float = 0.01, stop_patience: int = 15, min_delta: float = 0.05,
                 kpt_l1_gain: float = KPT_L1_GAIN, val_batch: int = 32, tensorboard: bool = True):
    """A CornerPoseTrainer class bound to these options (Ultralytics instantiates the class itself).

    plateau_patience / stop_patience: epochs without the capped mean corner error improving by at
    least min_delta px before the LR is multiplied by plateau_factor / training stops.
    kpt_l1_gain: weight of the L1 corner term added to Ultralytics' keypoint loss (corners/loss.py).
    """

    class CornerPoseTrainer(PoseTrainer):
        options = dict(data_root=data_root, aug_strength=aug_strength, plateau_patience=plateau_patience,
                       plateau_factor=plateau_factor, min_lr_factor=min_lr_factor, stop_patience=stop_patience,
                       min_delta=min_delta, kpt_l1_gain=kpt_l1_gain)

        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            self._val_samples = None
            self._tb = None
            # Written before the first epoch, so that a run killed at any point can be resumed.
            atomic_write_bytes(os.path.join(self.save_dir, OPTIONS_FILE), json.dumps(self.options, indent=1).encode())
            self.add_callback("on_train_epoch_start", lambda t: t.sync_plateau_lr())
            if tensorboard:
                self.add_callback("on_fit_epoch_end", lambda t: t.log_tensorboard())

        # --- data -------------------------------------------------------------------------
        def build_dataset(self, img_path, mode="train", batch=None):
            gs = max(int(unwrap_model(self.model).stride.max()), 32)
            corner_transform = None
            if mode == "train":
                corner_transform = get_corner_transforms(aug_strength)
                # Albumentations seeds a new Compose from OS entropy; --seed decides it instead
                # (with --workers 0; workers reseed their copy, see _reseed_in_worker).
                corner_transform.set_random_seed(self.args.seed)
            return CornerPoseDataset(
                img_path=img_path, imgsz=self.args.imgsz, batch_size=batch, augment=mode == "train", hyp=self.args,
                rect=self.args.rect or mode == "val", cache=self.args.cache or None, single_cls=False, stride=gs,
                pad=0.0 if mode == "train" else 0.5, prefix=colorstr(f"{mode}: "), task="pose",
                classes=self.args.classes, data=self.data, fraction=self.args.fraction if mode == "train" else 1.0,
                corner_transform=corner_transform,
                true_corners={os.path.basename(p): c for p, c in corner_samples(data_root, "train") if len(c)}
                if mode == "train" else None)

        def set_model_attributes(self):
            super().set_model_attributes()
            # data.yaml's kpt_oks_sigmas (tight, for the OKS metric) would also set the loss width;
            # the loss keeps the wide default (see corners/data.py).
            self.model.kpt_oks_sigmas = [LOSS_OKS_SIGMA] * NUM_CORNERS
            # Our keypoint loss (corners/loss.py). Ultralytics builds model.criterion lazily only when it
            # is None, and strips it from every checkpoint, so setting it here covers training, the
            # EMA copy's validation loss and a resume alike.
            self.model.criterion = CornerPoseLoss(self.model, kpt_l1_gain)

        # --- validation, plateau, early stopping ------------------------------------------
        def corner_metrics(self) -> dict:
            if self._val_samples is None:
                self._val_samples = corner_samples(data_root, "test")
            model = self.ema.ema if self.ema else unwrap_model(self.model)
            was_training = model.training
            model.eval()
            metrics, _ = evaluate_runner(torch_runner(model), self._val_samples, batch_size=val_batch)
            model.train(was_training)
            return metrics

        def validate(self):
            metrics = self.validator(self)
            if metrics is None:
                return None, None
            metrics.pop("fitness", None)
            m = self.corner_metrics()
            watched = m["validation_capped_mean_px"]
            for k in ("capped_mean_px", "mean_px", "median_px", "pct_within_5px", "pct_within_10px",
                      "pct_within_20px", "pct_images_all_within_5px", "missed_cards", "false_positive_pct",
                      "validation_capped_mean_px"):
                metrics[f"corners/{k}"] = m.get(k, float("nan"))
            for k in ("recall_pct", "precision_pct", "right_card_pct", "matched_pct_within_5px"):
                metrics[f"corners/multi_{k}"] = m.get("multi", {}).get(k, float("nan"))
            fitness = -watched if math.isfinite(watched) else -float("inf")
            if self.best_fitness is None or self.best_fitness < fitness:
                self.best_fitness = fitness
            self.plateau_step(watched)
            state = self.plateau_state()
            metrics["corners/lr_factor"] = state["factor"]
            logger.info("corners: capped mean %.2f px (every card); one card: mean %.2f px, %.1f %% within 5 px, "
                        "%.1f %% within 10 px, %d missed; lr factor %.3g, %d epochs without gain", watched,
                        m["mean_px"], m["pct_within_5px"], m["pct_within_10px"], m["missed_cards"], state["factor"],
                        state["bad_epochs"])
            if m.get("multi"):
                logger.info("corners, several cards: recall %.1f %%, precision %.1f %%, right card %.1f %%",
                            m["multi"]["recall_pct"], m["multi"]["precision_pct"], m["multi"]["right_card_pct"])
            return metrics, fitness

        def plateau_state(self) -> dict:
            group = self.optimizer.param_groups[0]
            if PLATEAU_KEY not in group:
                group[PLATEAU_KEY] = {"best": float("inf"), "bad_epochs": 0, "since_reduction": 0, "factor": 1.0}
            return group[PLATEAU_KEY]

        def plateau_step(self, value: float) -> None:
            """One epoch's watched value (lower is better): reduce the LR or stop when it stalls."""
            s = self.plateau_state()
            if math.isfinite(value) and value < s["best"] - min_delta:
                s["best"], s["bad_epochs"], s["since_reduction"] = value, 0, 0
                return
            s["bad_epochs"] += 1
            s["since_reduction"] += 1
            if s["since_reduction"] > plateau_patience and s["factor"] * plateau_factor >= min_lr_factor - 1e-12:
                s["factor"] *= plateau_factor
                s["since_reduction"] = 0
                for g in self.optimizer.param_groups:
                    g["initial_lr"] *= plateau_factor
                    g["lr"] *= plateau_factor
                self.sync_plateau_lr()
                logger.info("corner error has not improved for %d epochs: learning rate x%.3g (now x%.3g of the "
                            "schedule)", plateau_patience + 1, plateau_factor, s["factor"])
            if s["bad_epochs"] > stop_patience:
                logger.info("corner error has not improved by %.3g px for %d epochs: stopping early", min_delta,
                            s["bad_epochs"])
                self.stop = True

        def sync_plateau_lr(self) -> None:
            """Scheduler base LRs follow the (possibly reduced, possibly resumed) initial LRs."""
            if self.scheduler is not None:
                self.scheduler.base_lrs = [g["initial_lr"] for g in self.optimizer.param_groups]

        # --- logging ----------------------------------------------------------------------
        def log_tensorboard(self) -> None:
            if self._tb is None:
                self._tb = open_tensorboard(str(self.save_dir)) or False   # False: warned once, no writer
            if self._tb is False:
                return
            step = self.epoch + 1
            if self.tloss is not None:
                for k, v in self.label_loss_items(self.tloss, prefix="train").items():
                    self._tb.add_scalar(k, float(v), step)
            for k, v in {**(self.metrics or {}), **(self.lr or {})}.items():
                if isinstance(v, (int, float, np.floating)) and math.isfinite(float(v)):
                    self._tb.add_scalar(k, float(v), step)
            self._tb.flush()

    return CornerPoseTrainer

