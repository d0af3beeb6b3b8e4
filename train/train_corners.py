"""Train the card corner model: YOLO12n-pose (Ultralytics 8.4.190), 4 keypoints.

    python train/train_corners.py                                  # dataset/ -> train/runs/corners/<name>
    python train/train_corners.py --epochs 150 --batch-size 64     # CUDA, FP16 mixed precision
    python train/train_corners.py --time 0.5                       # stop (and fit the LR schedule) to 30 min
    python train/train_corners.py --resume train/runs/corners/yolo12n_pose/weights/last.pt
    python train/train_corners.py --weights my_corners.pt          # fine-tune a checkpoint of yours

The annotations are converted into an Ultralytics pose dataset under .cache/ (the images are
linked, never copied; dataset/ is never written to). Training images are 480x640 portraits,
augmented by corners/augment.py and batched at 640 high x 480 wide, the shape the exported model
takes. Early stopping, the LR plateau and best.pt all
follow the validation corner error in pixels (corners/trainer.py). Writes weights/last.pt and
best.pt, results.csv (Ultralytics' metrics plus `corners/*` per epoch), TensorBoard events and
corner_options.json (what a resume needs). Nothing reaches for the network.
"""

from __future__ import annotations

import os

os.environ.setdefault("YOLO_OFFLINE", "1")   # before ultralytics is imported: no hub, no update checks

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402

from common import (  # noqa: E402,E501
    DEFAULT_DATASET,
    DEFAULT_LOADER_WORKERS,
    DEFAULT_RUNS_DIR,
    DataError,
    resolve_path,
    run_script,
    select_device,
)
from corners.data import DEFAULT_CACHE_DIR, KPT_L1_GAIN, KPT_SHAPE, build_pose_dataset  # noqa: E402

logger = logging.getLogger(__name__)

MODEL_CFG = "yolo12n-pose.yaml"   # built from Ultralytics' packaged config: no official YOLO12 pose weights
TRAIN_IMGSZ = 640                 # Ultralytics' long side; batches are 640x480 (corners/trainer.py)
# Ultralytics' own augmentations, set deliberately: corners/augment.py replaces all of them on the
# original frame (zoom, shift, rotation, perspective, flip with corner re-ordering, colour), so
# nothing here may move, scale, flip or recolour the image a second time. Mosaic would also shrink
# cards to a quarter and cut corners in half at tile seams.
ULTRALYTICS_AUGMENTATION = dict(mosaic=0.0, close_mosaic=0, mixup=0.0, cutmix=0.0, copy_paste=0.0, degrees=0.0,
                                translate=0.0, scale=0.0, shear=0.0, perspective=0.0, fliplr=0.0, flipud=0.0,
                                hsv_h=0.0, hsv_s=0.0, hsv_v=0.0, augmentations=[])
TRAINER_OPTIONS = ("aug_strength", "plateau_patience", "plateau_factor", "min_lr_factor", "stop_patience",
                   "min_delta", "kpt_l1_gain")
OPTION_BEFORE_IT_EXISTED = {"kpt_l1_gain": 0.0}   # runs before the L1 term had Ultralytics' loss alone
# Warmup from scratch only. Ultralytics' warmup also starts the bias LR at warmup_bias_lr (0.1,
# 50x our AdamW LR), which knocks a trained checkpoint's biases about: --weights starts at 0.
WARMUP_EPOCHS_FROM_SCRATCH = 3.0


def resolve_device(device: str | None) -> str:
    """Ultralytics device string; CUDA when present, else the CPU with a warning."""
    if device is not None and "," in device:
        raise DataError("one GPU per run: Ultralytics runs several GPUs in a subprocess that cannot carry this "
                        "script's trainer")
    device = select_device(device, "without mixed precision; it works, but a real run needs hours: the corner "
                                   "model is meant to be trained on a CUDA GPU")
    # Ultralytics names a GPU by its index ("0"), not "cuda"/"cuda:N".
    return "cpu" if device == "cpu" else device.removeprefix("cuda").removeprefix(":") or "0"


def saved_trainer_options(saved: dict) -> dict:
    """corner_options.json -> the trainer options a resume must reuse. A run older than an
    option resumes with what it was trained with."""
    return {k: saved[k] if k in saved else OPTION_BEFORE_IT_EXISTED[k] for k in TRAINER_OPTIONS}


def warmup_epochs(args: argparse.Namespace) -> float:
    if args.warmup_epochs is not None:
        return args.warmup_epochs
    return 0.0 if args.weights else WARMUP_EPOCHS_FROM_SCRATCH


def main(args: argparse.Namespace) -> dict:
    from ultralytics import YOLO

    from corners.predict import load_pose_model
    from corners.trainer import OPTIONS_FILE, make_trainer

    data_root = resolve_path(args.data_path)
    if args.kpt_l1_gain < 0:
        raise DataError(f"--kpt-l1-gain must be >= 0, got {args.kpt_l1_gain}")
    if args.resume:
        last = resolve_path(args.resume)
        options_path = os.path.join(os.path.dirname(os.path.dirname(last)), OPTIONS_FILE)
        if not os.path.isfile(options_path):
            raise DataError(f"{options_path} not found: --resume takes the weights/last.pt of a train_corners.py run")
        with open(options_path) as f:
            saved = json.load(f)
        data_root = saved["data_root"]
        for k, v in saved_trainer_options(saved).items():
            setattr(args, k, v)
    data_yaml = build_pose_dataset(data_root, resolve_path(args.cache_dir))
    device = resolve_device(args.device)
    trainer = make_trainer(data_root, **{k: getattr(args, k) for k in TRAINER_OPTIONS})

    if args.resume:
        model = YOLO(last, task="pose")
        model.train(resume=True, data=data_yaml, trainer=trainer, device=device, workers=args.workers)
    else:
        model = load_pose_model(resolve_path(args.weights)) if args.weights else YOLO(MODEL_CFG, task="pose")
        if args.weights:
            # Loading into a fresh yolo12n-pose.yaml model would drop the whole head (it is built for
            # 17 keypoints until the data is read): start from the checkpoint's own model instead.
            kpt_shape = list(getattr(model.model, "kpt_shape", []) or [])
            if kpt_shape != KPT_SHAPE:
                raise DataError(f"{args.weights}: a pose model with kpt_shape {kpt_shape}, expected {KPT_SHAPE} "
                                f"(4 card corners)")
        train_args = dict(
            data=data_yaml, epochs=args.epochs, time=args.time, batch=args.batch_size, imgsz=TRAIN_IMGSZ,
            device=device, workers=args.workers, project=resolve_path(args.output_dir), name=args.name,
            exist_ok=False, seed=args.seed, optimizer=args.optimizer, lr0=args.lr, warmup_epochs=warmup_epochs(args),
            cos_lr=True, amp=device != "cpu", plots=False, val=True, patience=0, cache=args.cache or False,
            fraction=args.fraction, verbose=not args.quiet, **ULTRALYTICS_AUGMENTATION)
        if args.extra:
            try:
                train_args.update(json.loads(args.extra))
            except json.JSONDecodeError as e:
                raise DataError(f"--extra is not valid JSON ({e.msg}): {args.extra}") from None
        model.train(trainer=trainer, **train_args)
    t = model.trainer
    best = os.path.join(t.save_dir, "weights", "best.pt")
    logger.info("best corner model (lowest capped mean corner error): %s", best)
    return {"save_dir": str(t.save_dir), "best": best, "last": os.path.join(t.save_dir, "weights", "last.pt"),
            "data_yaml": data_yaml}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train the YOLO12n-pose card corner model", add_help=add_help)
    p.add_argument("--data-path", default=DEFAULT_DATASET, help="dataset root (default: dataset/ at the repo root)")
    p.add_argument("--cache-dir", default=DEFAULT_CACHE_DIR, help="where the Ultralytics view of the dataset goes")
    p.add_argument("--output-dir", default=os.path.join(DEFAULT_RUNS_DIR, "corners"))
    p.add_argument("--name", default="yolo12n_pose", help="run folder under --output-dir (numbered if it exists)")
    p.add_argument("--epochs", type=int, default=150)
    p.add_argument("--time", type=float, default=None,
                   help="hours: train for this long (Ultralytics refits the epochs and LR schedule after epoch 1)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=0.002, help="initial LR (AdamW)")
    p.add_argument("--optimizer", default="AdamW",
                   help="Ultralytics optimizer name; 'auto' would ignore --lr")
    p.add_argument("--warmup-epochs", type=float, default=None,
                   help=f"default: {WARMUP_EPOCHS_FROM_SCRATCH:g} from scratch, 0 with --weights")
    p.add_argument("--device", default=None, help="'0' (first GPU) or 'cpu'; default: CUDA when available")
    p.add_argument("--workers", type=int, default=DEFAULT_LOADER_WORKERS)
    p.add_argument("--cache", choices=["ram", "disk"], default=None, help="Ultralytics image cache (default: none)")
    p.add_argument("--fraction", type=float, default=1.0, help="use this fraction of the training images")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--weights", default=None, help="a corner checkpoint (.pt) to start from")
    p.add_argument("--resume", default=None, help="weights/last.pt of an interrupted run")
    p.add_argument("--aug-strength", type=float, default=1.0, help="scales every augmentation probability; 0 = off")
    p.add_argument("--plateau-patience", type=int, default=5,
                   help="epochs without corner-error gain before the LR is cut (as torch ReduceLROnPlateau)")
    p.add_argument("--plateau-factor", type=float, default=0.5)
    p.add_argument("--min-lr-factor", type=float, default=0.01, help="never cut the LR below this x the schedule")
    p.add_argument("--stop-patience", type=int, default=15, help="early stopping: epochs without corner-error gain")
    p.add_argument("--min-delta", type=float, default=0.05, help="px: the smallest corner-error drop that counts")
    p.add_argument("--kpt-l1-gain", type=float, default=KPT_L1_GAIN,
                   help="weight of the L1 corner term added to Ultralytics' keypoint loss (corners/loss.py); 0 = off")
    p.add_argument("--extra", default=None, help="JSON of further Ultralytics train() arguments, e.g. '{\"pose\": 20}'")
    p.add_argument("--quiet", action="store_true")
    return p


if __name__ == "__main__":
    run_script(main, get_args_parser)
