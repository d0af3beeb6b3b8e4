"""Train the corner refiner (corners/refine.py): the second stage that snaps YOLO's corners onto the
card's edges.

    python train/train_corner_refiner.py                                  # dataset/, CUDA if present
    python train/train_corner_refiner.py --epochs 60 --batch-size 64
    python train/train_corner_refiner.py --resume train/runs/corner_refiner/last.pt
    python train/train_corner_refiner.py --data-path /data/cards --weights train/checkpoints/card_corner_refiner.pt
    python train/export_corners.py <corner best.pt> --refiner train/runs/corner_refiner/best.pt

Every annotated image gives 4 crops, one per corner, centred on the true corner moved by a random
jitter; the refiner learns to point back at the corner. The jitter does not come from the corner
model, so the refiner does not depend on one detector's mistakes: mostly Gaussian
(--jitter-px, 6 px: the shipped detector's typical error) with a share spread uniformly up to
26 px (its tail). Corners outside the frame are left out. Training crops also get random
brightness, contrast, colour, noise, blur and a mirror about the crop's diagonal (which keeps the
card towards the bottom right). The validation split's jitter is fixed, so epochs compare.

Writes last.pt (every epoch) and best.pt (lowest validation mean error), both atomically,
metrics.csv and TensorBoard events. --resume continues a run exactly (its data, length and
schedule come from last.pt); --weights starts a new run from a refiner's weights (fine-tuning the
committed one on your data, say). CUDA with FP16 mixed precision when present; the CPU works
(about 100 s per epoch of 8000 images on 2 cores) with a warning.
"""

from __future__ import annotations

import argparse
import logging
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from common import (
    DEFAULT_DATASET,
    DEFAULT_LOADER_WORKERS,
    DEFAULT_RUNS_DIR,
    DataError,
    atomic_torch_save,
    open_tensorboard,
    resolve_path,
    run_script,
    select_device,
    write_csv,
)
from corners.data import corner_samples, in_frame
from corners.predict import load_checked
from corners.refine import CROP_PX, CornerRefiner, extract_crops, load_refiner, rotations

logger = logging.getLogger(__name__)

MAX_JITTER_PX = CROP_PX / 2 - 6    # the corner stays inside the crop with a margin
UNIFORM_JITTER_SHARE = 0.2
CSV_FIELDS = ["epoch", "lr", "train_loss", "val_jitter_mean_px", "val_mean_px", "val_median_px",
              "val_within_1px", "val_within_2px", "val_within_5px", "epoch_s"]
VAL_EPOCH = -1                     # the jitter stream of the validation split, the same every epoch
# What a resumed run keeps from its start (the rest, e.g. --workers or --device, may change).
RUN_OPTIONS = ("data_path", "val_split", "epochs", "batch_size", "lr", "weight_decay", "jitter_px", "seed")


class CornerCrops(Dataset):
    """Item i: the 4 corner crops of image i (4, 3, 64, 64) float 0..1, the corner's offset from
    each crop centre in crop pixels (4, 2), and which corners lie in the frame (4,) bool."""

    def __init__(self, data_path: str, split: str, jitter_px: float, augment: bool, seed: int):
        samples = [(p, c) for p, c in corner_samples(data_path, split) if c is not None]
        if not samples:
            raise DataError(f"{data_path}: the {split} split has no annotated corners to train the refiner on")
        self.paths = [p for p, _ in samples]
        self.corners = np.stack([c for _, c in samples]).astype(np.float32)     # (N, 4, 2) pixel-centre
        self.jitter_px, self.augment, self.seed = jitter_px, augment, seed
        self.epoch = 0
        self.rot = rotations()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        # One stream per (seed, epoch, image): reproducible whatever the worker count.
        rng = np.random.default_rng([self.seed, self.epoch + 1, i])
        jitter = rng.normal(0.0, self.jitter_px, (4, 2))
        wide = rng.random(4) < UNIFORM_JITTER_SHARE
        jitter[wide] = rng.uniform(-MAX_JITTER_PX, MAX_JITTER_PX, (int(wide.sum()), 2))
        jitter = torch.from_numpy(np.clip(jitter, -MAX_JITTER_PX, MAX_JITTER_PX).astype(np.float32))
        truth = torch.from_numpy(self.corners[i]) + 0.5                         # continuous px
        image = torch.from_numpy(load_checked(self.paths[i])).permute(2, 0, 1).float().div_(255)
        crops = extract_crops(image[None], (truth - jitter)[None], self.rot)   # (4, 3, 64, 64)
        # truth = centre + jitter in the image, so the target is R_k^T @ jitter in the crop.
        target = (self.rot.transpose(-1, -2) @ jitter[..., None])[..., 0]
        if self.augment:
            crops, target = photometric_and_mirror(crops, target, rng)
        return crops, target, torch.from_numpy(in_frame(self.corners[i]))


def photometric_and_mirror(crops: torch.Tensor, target: torch.Tensor, rng: np.random.Generator):
    """Per crop: gain 0.6-1.4, per-channel offset +-0.08, Gaussian noise up to 0.04, a blur
    (sigma 0.5-1.5 px) on a third of them, and a mirror about the main diagonal on half (x <-> y:
    the card still extends to +x and +y, the target swaps its coordinates)."""
    n = len(crops)
    gain = torch.from_numpy(rng.uniform(0.6, 1.4, (n, 1, 1, 1)).astype(np.float32))
    offset = torch.from_numpy(rng.uniform(-0.08, 0.08, (n, 3, 1, 1)).astype(np.float32))
    out = crops * gain + offset
    for j in np.flatnonzero(rng.random(n) < 1 / 3):
        sigma = float(rng.uniform(0.5, 1.5))
        radius = int(np.ceil(2.5 * sigma))
        k = torch.exp(-torch.arange(-radius, radius + 1, dtype=torch.float32) ** 2 / (2 * sigma ** 2))
        k = k / k.sum()
        x = F.pad(out[j:j + 1], (radius, radius, radius, radius), mode="replicate")
        x = F.conv2d(x, k.view(1, 1, 1, -1).expand(3, 1, 1, -1).contiguous(), groups=3)
        out[j] = F.conv2d(x, k.view(1, 1, -1, 1).expand(3, 1, -1, 1).contiguous(), groups=3)[0]
    noise = torch.from_numpy(rng.uniform(0, 0.04, (n, 1, 1, 1)).astype(np.float32))
    out = out + noise * torch.from_numpy(rng.standard_normal(out.shape).astype(np.float32))
    mirror = torch.from_numpy(rng.random(n) < 0.5)
    out = torch.where(mirror[:, None, None, None], out.transpose(-1, -2), out)
    target = torch.where(mirror[:, None], target.flip(-1), target)
    return out.clamp_(0, 1), target


def _worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)   # crops are cheap; workers must not fight the training threads


def make_loader(dataset: CornerCrops, batch_size: int, workers: int, shuffle: bool, epoch: int, seed: int,
                pin: bool) -> DataLoader:
    dataset.epoch = epoch
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, pin_memory=pin,
                      drop_last=shuffle and len(dataset) > batch_size, worker_init_fn=_worker_init,
                      generator=torch.Generator().manual_seed(seed * 1000 + epoch),
                      persistent_workers=False)


def flatten(batch, device):
    """(B, 4, ...) -> (B * 4, ...) for crops and targets, keeping only corners in the frame."""
    crops, target, valid = batch
    valid = valid.reshape(-1)
    return (crops.reshape(-1, 3, CROP_PX, CROP_PX)[valid].to(device, non_blocking=True),
            target.reshape(-1, 2)[valid].to(device, non_blocking=True))


@torch.no_grad()
def evaluate(model: CornerRefiner, loader: DataLoader, device: str, amp: bool) -> dict:
    model.eval()
    errors, jitters = [], []
    for batch in loader:
        crops, target = flatten(batch, device)
        with torch.autocast(torch.device(device).type, torch.float16, enabled=amp):
            pred = model(crops)
        errors.append(torch.linalg.norm(pred.float() - target, dim=-1).cpu())
        jitters.append(torch.linalg.norm(target, dim=-1).cpu())
    err, jit = torch.cat(errors).numpy(), torch.cat(jitters).numpy()
    return {"val_jitter_mean_px": float(jit.mean()), "val_mean_px": float(err.mean()),
            "val_median_px": float(np.median(err)),
            **{f"val_within_{t}px": float((err <= t).mean() * 100) for t in (1, 2, 5)}}


def write_metrics(output_dir: str, history: list[dict], writer) -> None:
    write_csv(os.path.join(output_dir, "metrics.csv"), CSV_FIELDS, history)
    if writer is not None:
        for key in CSV_FIELDS[1:]:
            writer.add_scalar(key, history[-1][key], history[-1]["epoch"])
        writer.flush()


def load_run(path: str) -> dict:
    """A last.pt of this script, or a DataError naming the file."""
    if not os.path.isfile(path):
        raise DataError(f"{path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:   # truncated or not a torch file: say which file instead of a torch traceback
        raise DataError(f"{path}: not a checkpoint ({type(e).__name__}: {e})") from None
    missing = [k for k in ("model", "optimizer", "scheduler", "epoch", "history", "args") if k not in ckpt]
    if missing:
        raise DataError(f"{path}: not a train_corner_refiner.py last.pt (no {', '.join(missing)}); "
                        "--weights takes a best.pt")
    return ckpt


def resume_options(args: argparse.Namespace, ckpt: dict, path: str) -> None:
    """A resumed run continues as it was started: its data, schedule and jitter come from the
    checkpoint (the one-cycle schedule is fixed to the run's length). An explicit different value
    is refused rather than silently dropped."""
    defaults = get_args_parser()
    for key in RUN_OPTIONS:
        saved, given = ckpt["args"][key], getattr(args, key)
        if given != defaults.get_default(key) and given != saved:
            raise DataError(f"{path}: the run was started with --{key.replace('_', '-')} {saved}; --resume "
                            f"continues it as it was (to change it, start a new run with --weights {path})")
        setattr(args, key, saved)


def main(args: argparse.Namespace) -> dict:
    ckpt = None
    if args.resume:
        args.resume = resolve_path(args.resume)
        ckpt = load_run(args.resume)
        resume_options(args, ckpt, args.resume)
    data_path = resolve_path(args.data_path)
    output_dir = resolve_path(args.output_dir or (os.path.dirname(args.resume) if args.resume else
                                                  os.path.join(DEFAULT_RUNS_DIR, "corner_refiner")))
    device = select_device(args.device, "the corner refiner trains in FP32 there")
    amp = device.startswith("cuda") and args.amp     # FP16 autocast + GradScaler; the CPU trains in FP32
    torch.manual_seed(args.seed)
    os.makedirs(output_dir, exist_ok=True)

    train_set = CornerCrops(data_path, "train", args.jitter_px, augment=True, seed=args.seed)
    val_set = CornerCrops(data_path, args.val_split, args.jitter_px, augment=False, seed=args.seed)
    model = CornerRefiner()
    if args.weights:   # fine-tuning (e.g. the committed refiner on your own data): weights only
        model.load_state_dict(load_refiner(resolve_path(args.weights)).state_dict())
        logger.info("initialised the refiner from %s", args.weights)
    model = model.to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    steps_per_epoch = max(1, len(train_set) // args.batch_size) if len(train_set) > args.batch_size else 1
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, args.lr, total_steps=args.epochs * steps_per_epoch,
                                                    pct_start=min(0.3, 1.0 / max(1, args.epochs)))
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    start, history, best = 0, [], float("inf")
    if ckpt is not None:
        model.load_state_dict(ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if amp and ckpt.get("scaler"):     # a CPU run saved an empty (disabled) scaler
            scaler.load_state_dict(ckpt["scaler"])
        start, history, best = ckpt["epoch"] + 1, ckpt["history"], ckpt["best_val_mean_px"]
        logger.info("resumed from %s at epoch %d of %d", args.resume, start, args.epochs)
    writer = open_tensorboard(output_dir)
    pin = device.startswith("cuda")
    val_loader = make_loader(val_set, args.batch_size, args.workers, False, VAL_EPOCH, args.seed, pin)
    logger.info("%d training and %d validation images, 4 crops each; %d epochs on %s", len(train_set), len(val_set),
                args.epochs, device)
    for epoch in range(start, args.epochs):
        t0 = time.time()
        model.train()
        total, n = 0.0, 0
        loader = make_loader(train_set, args.batch_size, args.workers, True, epoch, args.seed, pin)
        for batch in tqdm(loader, desc=f"epoch {epoch}", unit="batch", disable=args.quiet, leave=False):
            crops, target = flatten(batch, device)
            with torch.autocast(torch.device(device).type, torch.float16, enabled=amp):
                pred = model(crops)
            # Smooth L1 in crop pixels: L2 below 1 px (sub-pixel precision), L1 above (the far
            # jitters do not dominate).
            loss = F.smooth_l1_loss(pred.float(), target, beta=1.0)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            if scheduler.last_epoch < scheduler.total_steps - 1:
                scheduler.step()
            total, n = total + loss.item() * len(target), n + len(target)
        row = {"epoch": epoch, "lr": optimizer.param_groups[0]["lr"], "train_loss": total / max(1, n),
               **evaluate(model, val_loader, device, amp), "epoch_s": round(time.time() - t0, 1)}
        history.append(row)
        improved = row["val_mean_px"] < best
        best = min(best, row["val_mean_px"])
        ckpt = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "epoch": epoch, "history": history, "best_val_mean_px": best,
                "crop_px": CROP_PX, "args": {k: v for k, v in vars(args).items()}}
        atomic_torch_save(ckpt, os.path.join(output_dir, "last.pt"))
        if improved:
            # best.pt carries only what inference needs: loadable with weights_only=True.
            atomic_torch_save({"model": model.state_dict(), "crop_px": CROP_PX, "epoch": epoch,
                               "val_mean_px": row["val_mean_px"], "history": history,
                               "args": {k: v for k, v in vars(args).items()}},
                              os.path.join(output_dir, "best.pt"))
        write_metrics(output_dir, history, writer)
        logger.info("epoch %d: loss %.3f, validation %.2f px mean (jitter %.2f px), %.1f %% within 1 px, "
                    "%.1f %% within 2 px, %.0f s%s", epoch, row["train_loss"], row["val_mean_px"],
                    row["val_jitter_mean_px"], row["val_within_1px"], row["val_within_2px"], row["epoch_s"],
                    " (best)" if improved else "")
    if writer is not None:
        writer.close()
    return {"output_dir": output_dir, "best": os.path.join(output_dir, "best.pt"),
            "last": os.path.join(output_dir, "last.pt"), "history": history}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train the corner refiner (second stage of the corner model)",
                                add_help=add_help)
    p.add_argument("--data-path", default=DEFAULT_DATASET, help="dataset root (default: dataset/ at the repo root)")
    p.add_argument("--output-dir", default=None, help="default: train/runs/corner_refiner (or the --resume folder)")
    p.add_argument("--val-split", default="test")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16, help="images per batch (4 crops each)")
    p.add_argument("--lr", type=float, default=2e-3, help="AdamW peak learning rate (one-cycle schedule)")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--jitter-px", type=float, default=6.0, help="std of the Gaussian corner jitter, px")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True, help="FP16 mixed precision on CUDA")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--workers", type=int, default=DEFAULT_LOADER_WORKERS)
    p.add_argument("--resume", default=None, help="last.pt to continue from, with the run's own options")
    p.add_argument("--weights", default=None, help="start from this refiner's weights (a best.pt, e.g. "
                   "train/checkpoints/card_corner_refiner.pt): fine-tuning with a new schedule")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


if __name__ == "__main__":
    run_script(main, get_args_parser)
