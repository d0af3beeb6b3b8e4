"""Train the LR-ASPP MobileNetV3 card segmentation model.

    python train/train.py                                   # dataset/ -> train/runs/segmentation
    python train/train.py --epochs 40 --batch-size 32       # CUDA, FP16 mixed precision
    torchrun --nproc_per_node 4 train/train.py ...          # several GPUs
    python train/train.py --resume train/runs/segmentation/last.pt
    python train/train.py --recipe cpu                      # the 2-core CPU recipe (see README)

Writes <output-dir>/last.pt and best.pt (plain dicts, written atomically), metrics.csv,
curves.png and TensorBoard events.
"""

from __future__ import annotations

import argparse
import io
import logging
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.distributed as dist
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Subset
from tqdm import tqdm

from common import (
    DEFAULT_DATASET,
    DEFAULT_LOADER_WORKERS,
    DEFAULT_RUNS_DIR,
    IMAGE_HEIGHT,
    IMAGE_WIDTH,
    DataError,
    ScriptError,
    atomic_torch_save,
    atomic_write_bytes,
    open_tensorboard,
    public_command,
    resolve_path,
    run_script,
    select_device,
    write_csv,
)
from segmentation.dataset import CardSegmentationDataset, get_training_transforms, get_validation_transforms
from segmentation.metrics import ConfusionMatrix, reduce_sum, segmentation_loss
from segmentation.model import (
    OUTPUT_STRIDES,
    build_model,
    checkpoint_architecture,
    load_checkpoint,
    load_checkpoint_model,
    output_stride,
    to_output_stride_32,
    to_reduced_tail,
)

logger = logging.getLogger(__name__)

# Named recipes override the parser defaults (explicit flags still win). The CPU recipe trains
# most epochs at half resolution (4x fewer pixels) and finishes at 480x640: the network is fully
# convolutional, so the last epochs adapt it to the deployment scale.
RECIPES = {
    "cpu": dict(epochs=12, low_res_epochs=10, batch_size=8, lr=2e-3, max_train_images=1000, max_val_images=100,
                patience=100, workers=2),
}
CSV_FIELDS = ["epoch", "height", "width", "lr", "train_loss", "val_loss", "iou", "dice", "pixel_acc",
              "train_images_per_s", "epoch_s"]


# ----------------------------------------------------------------------------- distributed

def init_distributed(args: argparse.Namespace) -> None:
    """torchrun sets RANK / WORLD_SIZE / LOCAL_RANK; without them this is a single process."""
    args.distributed = "RANK" in os.environ and "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1
    args.rank, args.world_size, args.local_rank = 0, 1, 0
    if not args.distributed:
        return
    args.rank, args.world_size = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
    args.local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if args.rank != 0:   # rank 0 speaks for the run (logs, checkpoints, TensorBoard); the others only warn
        logging.getLogger().setLevel(logging.WARNING)
    backend = "nccl" if args.device.startswith("cuda") else "gloo"
    if backend == "nccl":
        torch.cuda.set_device(args.local_rank)
        args.device = f"cuda:{args.local_rank}"
    dist.init_process_group(backend)


def is_main(args: argparse.Namespace) -> bool:
    return args.rank == 0


# ----------------------------------------------------------------------------- data

def _seed_worker(worker_id: int) -> None:
    # Each worker gets its own stream for numpy, random and Albumentations (derived from the
    # loader's per-epoch generator, so a resumed run sees the same augmentations).
    seed = torch.initial_seed() % 2 ** 32
    np.random.seed(seed)
    random.seed(seed)
    _seed_transforms(torch.utils.data.get_worker_info().dataset, seed)


def _seed_transforms(dataset, seed: int) -> None:
    ds = dataset.dataset if isinstance(dataset, Subset) else dataset
    if ds.transforms is not None:
        ds.transforms.set_random_seed(seed)


def make_loader(dataset, args: argparse.Namespace, train: bool, epoch: int) -> DataLoader:
    # With --workers 0 the augmentations are drawn in this process, from a generator that
    # Albumentations seeds from OS entropy: seed it per epoch so that every caller (training,
    # resume, pruning's calibration and fine-tuning) draws the same augmentations on every run.
    # Workers reseed their own copy in _seed_worker.
    if train:
        _seed_transforms(dataset, args.seed * 1000 + epoch)
    sampler = None
    generator = torch.Generator().manual_seed(args.seed * 1000 + epoch)
    if args.distributed and train:   # equal shards (the tail dropped): DDP needs the same steps on every rank
        sampler = DistributedSampler(dataset, shuffle=True, seed=args.seed, drop_last=True)
        sampler.set_epoch(epoch)
    elif args.distributed:   # every image once: DistributedSampler would pad with duplicates that count twice
        sampler = range(args.rank, len(dataset), args.world_size)
    n = len(dataset) if sampler is None else len(sampler)   # this rank's images
    return DataLoader(dataset, batch_size=args.batch_size if train else args.val_batch_size,
                      shuffle=train and sampler is None, sampler=sampler, num_workers=args.workers,
                      pin_memory=args.device.startswith("cuda"), drop_last=train and n > args.batch_size,
                      worker_init_fn=_seed_worker, generator=generator)


def build_datasets(args: argparse.Namespace) -> tuple[CardSegmentationDataset, Dataset, Dataset]:
    """(train dataset, training subset, validation subset); the first carries the transforms."""
    train_set = CardSegmentationDataset(args.data_path, "train", get_training_transforms(*epoch_size(args, 0)))
    val_set = CardSegmentationDataset(args.data_path, args.val_split, get_validation_transforms(*args.size))
    # Fixed subsets (first N by stem, i.e. random for generated data) for quick recipes.
    train_data = Subset(train_set, range(min(len(train_set), args.max_train_images))) \
        if args.max_train_images else train_set
    val_data = Subset(val_set, range(min(len(val_set), args.max_val_images))) if args.max_val_images else val_set
    logger.info("data: %d train / %d %s images from %s", len(train_data), len(val_data), args.val_split,
                args.data_path)
    return train_set, train_data, val_data


def epoch_size(args: argparse.Namespace, epoch: int) -> tuple[int, int]:
    """Training (height, width) of an epoch: reduced for the first --low-res-epochs."""
    h, w = args.size
    if epoch < args.low_res_epochs:
        f = args.low_res_factor
        # Multiples of 16 (the backbone's output stride) keep its feature maps aligned with the mask.
        h, w = max(16, int(round(h * f / 16)) * 16), max(16, int(round(w * f / 16)) * 16)
    return h, w


def create_lr_scheduler(optimizer, args: argparse.Namespace, iters_per_epoch: int):
    """Linear warmup from 1 % then cosine to 1 % of --lr over --epochs, stepped every iteration."""
    total_iters = max(1, args.epochs * iters_per_epoch)
    warmup_iters = min(total_iters - 1, int(args.warmup_epochs * iters_per_epoch))

    def lr_lambda(it: int) -> float:
        if it < warmup_iters:
            return 0.01 + 0.99 * it / max(1, warmup_iters)
        t = (it - warmup_iters) / max(1, total_iters - warmup_iters)
        return 0.01 + 0.99 * 0.5 * (1 + math.cos(math.pi * min(1.0, t)))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, lr_lambda)


# ----------------------------------------------------------------------------- one epoch

def train_step(model, images, masks, optimizer, scaler, amp_dtype, dice_weight: float = 1.0) -> torch.Tensor:
    """One optimisation step under autocast (`amp_dtype` None = fp32); returns the loss."""
    with torch.autocast(images.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        logits = model(images)                              # (B, 2, H, W)
    loss = segmentation_loss(logits, masks, dice_weight)    # computed in fp32
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:   # FP16: scale the loss so small gradients do not underflow
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()
    return loss.detach()


def train_one_epoch(model, loader, optimizer, lr_scheduler, scaler, args, epoch: int) -> dict:
    model.train()
    device = torch.device(args.device)
    total_loss, n_images, start = 0.0, 0, time.perf_counter()
    bar = tqdm(loader, desc=f"epoch {epoch}", unit="batch", disable=not is_main(args) or args.quiet, leave=False)
    for images, masks in bar:
        images, masks = images.to(device, non_blocking=True), masks.to(device, non_blocking=True)
        loss = train_step(model, images, masks, optimizer, scaler, args.amp_dtype, args.dice_weight)
        if not torch.isfinite(loss):
            raise ScriptError(f"training diverged: loss is {loss.item()} at epoch {epoch}; lower --lr or check "
                              f"the data (last.pt holds the last good epoch)")
        lr_scheduler.step()
        total_loss += loss.item() * images.shape[0]
        n_images += images.shape[0]
        bar.set_postfix(loss=f"{loss.item():.4f}", lr=f"{optimizer.param_groups[0]['lr']:.2e}")
    elapsed = time.perf_counter() - start
    total_loss, n_images = reduce_sum(total_loss, n_images)   # over all ranks
    return {"train_loss": total_loss / max(1, n_images), "train_images_per_s": n_images / elapsed}


@torch.inference_mode()
def evaluate(model, loader, args) -> dict:
    """Loss and card IoU / Dice / pixel accuracy over the whole split (one confusion matrix).

    Under torchrun each rank runs its shard through the bare model (no collectives in the loop, so
    shards may differ in length) and the sums are reduced: every rank returns the same metrics.
    """
    model.eval()
    device = torch.device(args.device)
    confmat = ConfusionMatrix(2)
    total_loss, n = 0.0, 0
    for images, masks in tqdm(loader, desc="val", unit="batch", disable=not is_main(args) or args.quiet, leave=False):
        images, masks = images.to(device), masks.to(device)
        with torch.autocast(device.type, dtype=args.amp_dtype, enabled=args.amp_dtype is not None):
            logits = model(images)
        total_loss += segmentation_loss(logits, masks, args.dice_weight).item() * images.shape[0]
        n += images.shape[0]
        confmat.update(masks, logits.argmax(1))
    confmat.reduce_from_all_processes()
    total_loss, n = reduce_sum(total_loss, n)
    return {"val_loss": total_loss / max(1, n), **confmat.compute()}


# ----------------------------------------------------------------------------- outputs

def write_outputs(output_dir: str, history: list[dict], writer) -> None:
    """metrics.csv and curves.png, rewritten whole from the history kept in the checkpoint."""
    write_csv(os.path.join(output_dir, "metrics.csv"), CSV_FIELDS, history)
    if writer is not None:
        row = history[-1]
        for key in ("lr", "train_loss", "val_loss", "iou", "dice", "pixel_acc", "train_images_per_s"):
            writer.add_scalar(key, row[key], row["epoch"])
        writer.flush()
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return
    epochs = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [r["train_loss"] for r in history], label="train")
    a.plot(epochs, [r["val_loss"] for r in history], label="val")
    a.set_xlabel("epoch"), a.set_ylabel("loss"), a.legend()
    b.plot(epochs, [r["iou"] for r in history], label="card IoU")
    b.plot(epochs, [r["dice"] for r in history], label="Dice")
    b.set_xlabel("epoch"), b.legend()
    fig.tight_layout()
    png = io.BytesIO()
    fig.savefig(png, dpi=80)
    plt.close(fig)
    atomic_write_bytes(os.path.join(output_dir, "curves.png"), png.getvalue())


# ----------------------------------------------------------------------------- main

def resolve_args(args: argparse.Namespace, parser: argparse.ArgumentParser | None = None) -> argparse.Namespace:
    """Apply --recipe (explicit flags win), resolve paths, device and precision."""
    if args.recipe:
        parser = parser or get_args_parser()
        for key, value in RECIPES[args.recipe].items():
            if getattr(args, key) == parser.get_default(key):
                setattr(args, key, value)
    args.data_path = resolve_path(args.data_path)
    if args.output_dir is None:
        args.output_dir = os.path.dirname(resolve_path(args.resume)) if args.resume else \
            os.path.join(DEFAULT_RUNS_DIR, "segmentation")
    args.output_dir = resolve_path(args.output_dir)
    args.device = select_device(args.device, "training is meant for CUDA GPUs; see the CPU recipe in train/README.md")
    # FP16 autocast + GradScaler on CUDA; bf16 autocast on CPU (fp16 is slow there and
    # GradScaler unnecessary for bf16's fp32-sized exponent).
    if not args.amp:
        args.amp_dtype = None
    else:
        args.amp_dtype = torch.float16 if args.device.startswith("cuda") else torch.bfloat16
    return args


def adapt_architecture(model: torch.nn.Module, source: dict, pruned: bool, args: argparse.Namespace):
    """The --weights model in the architecture the flags ask for (model.py): output stride 16 -> 32
    in place; a reduced tail as a new model with every tensor whose shape still matches."""
    _, had_reduced_tail = checkpoint_architecture(source)
    if args.output_stride == 16 and output_stride(model) == 32:
        raise ScriptError(f"{args.weights} has output stride 32; it cannot be turned back into 16 (train a "
                          f"stride-16 model from a stride-16 checkpoint or from ImageNet)")
    if args.reduced_tail and not had_reduced_tail:
        if pruned:
            raise ScriptError(f"{args.weights} is pruned: --reduced-tail needs an unpruned checkpoint")
        model, copied, total = to_reduced_tail(model)
        logger.info("reduced tail: %d of its %d tensors carried over from %s, the rest initialised anew", copied,
                    total, args.weights)
    args.reduced_tail = args.reduced_tail or had_reduced_tail
    if args.output_stride == 32 and output_stride(model) == 16:
        to_output_stride_32(model)
        logger.info("output stride 16 -> 32: the backbone's last stage strided instead of dilated")
    return model


def main(args: argparse.Namespace) -> dict:
    args = resolve_args(args)
    init_distributed(args)
    if not args.device.startswith("cuda"):
        # The cores are shared by the processes torchrun starts on this machine.
        local_procs = int(os.environ.get("LOCAL_WORLD_SIZE", 1)) if args.distributed else 1
        torch.set_num_threads(max(1, args.threads or (os.cpu_count() or 1) // local_procs))
    torch.manual_seed(args.seed)
    os.makedirs(args.output_dir, exist_ok=True)

    train_set, train_data, val_data = build_datasets(args)

    # A pruned checkpoint carries its own (smaller) architecture as `model_object`.
    if args.resume or args.weights:
        model, source = load_checkpoint_model(resolve_path(args.resume or args.weights))
        if args.resume and not (source.get("optimizer") and source.get("lr_scheduler")):
            # Shipped (train/checkpoints), calibrated and averaged checkpoints keep the weights only.
            raise DataError(f"{args.resume}: no optimizer and schedule state to resume (a shipped, calibrated or "
                            "averaged checkpoint); start a new run from it with --weights")
        pruned = source.get("model_object") is not None
        # A pruned model keeps its pruning record through fine-tuning: the model card reads it.
        lineage = {k: source.get(k) for k in ("pruning", "source_checkpoint")} if pruned else {}
        model.pretrained_backbone = source.get("pretrained_backbone", False) if args.resume else \
            f"initialised from {os.path.basename(args.weights)}"
        if args.weights:   # fine-tuning: weights only, fresh optimizer and schedule
            logger.info("initialised the model from %s", args.weights)
            model = adapt_architecture(model, source, pruned, args)
        else:   # resuming: the checkpoint's architecture, whatever the flags say
            _, args.reduced_tail = checkpoint_architecture(source)
        args.output_stride = output_stride(model)
    else:
        model, pruned, lineage = build_model(args.pretrained, args.output_stride or 16, args.reduced_tail), False, {}
        args.output_stride = output_stride(model)
    model = model.to(args.device)
    if args.distributed and args.device.startswith("cuda"):
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model_without_ddp = model
    if args.distributed:
        model = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[args.local_rank] if args.device.startswith("cuda") else None)
        model_without_ddp = model.module

    optimizer = torch.optim.AdamW(model_without_ddp.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    lr_scheduler = create_lr_scheduler(optimizer, args, len(make_loader(train_data, args, True, 0)))
    scaler = torch.amp.GradScaler("cuda") if args.amp_dtype == torch.float16 else None

    state = {"start_epoch": 0, "best_iou": -1.0, "best_epoch": -1, "bad_epochs": 0, "history": []}
    if args.resume:
        ckpt = load_checkpoint(resolve_path(args.resume))
        optimizer.load_state_dict(ckpt["optimizer"])
        lr_scheduler.load_state_dict(ckpt["lr_scheduler"])
        if scaler is not None and ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        state.update(start_epoch=ckpt["epoch"] + 1, best_iou=ckpt["best_iou"], best_epoch=ckpt["best_epoch"],
                     bad_epochs=ckpt["bad_epochs"], history=ckpt["history"])
        logger.info("resumed from %s at epoch %d (best IoU %.4f at epoch %d)", args.resume, state["start_epoch"],
                    state["best_iou"], state["best_epoch"])

    writer = open_tensorboard(args.output_dir) if is_main(args) else None
    hardware = f"{args.world_size} x {torch.cuda.get_device_name(args.device)}" if args.device.startswith("cuda") \
        else f"CPU, {torch.get_num_threads()} threads"
    result = {"stopped_early": False}
    for epoch in range(state["start_epoch"], args.epochs):
        if state["bad_epochs"] >= args.patience:
            break
        t0 = time.perf_counter()
        h, w = epoch_size(args, epoch)
        train_set.transforms = get_training_transforms(h, w)   # seeded by make_loader
        stats = train_one_epoch(model, make_loader(train_data, args, True, epoch), optimizer, lr_scheduler, scaler,
                                args, epoch)
        if args.distributed:   # BatchNorm statistics of the last step are per rank: evaluate the one rank 0 saves
            for buffer in model_without_ddp.buffers():
                dist.broadcast(buffer, 0)
        stats.update(evaluate(model_without_ddp, make_loader(val_data, args, False, epoch), args))
        row = {"epoch": epoch, "height": h, "width": w, "lr": optimizer.param_groups[0]["lr"], **stats,
               "epoch_s": time.perf_counter() - t0}
        state["history"].append(row)
        improved = stats["iou"] > state["best_iou"] + args.min_delta
        if improved:
            state.update(best_iou=stats["iou"], best_epoch=epoch, bad_epochs=0)
        else:
            state["bad_epochs"] += 1
        peak = torch.cuda.max_memory_allocated() / 2 ** 20 if args.device.startswith("cuda") else 0
        logger.info("epoch %d/%d %dx%d: loss %.4f val_loss %.4f IoU %.4f Dice %.4f acc %.4f | %.1f img/s, %.0f s%s%s",
                    epoch, args.epochs - 1, w, h, stats["train_loss"], stats["val_loss"], stats["iou"], stats["dice"],
                    stats["pixel_acc"], stats["train_images_per_s"], row["epoch_s"],
                    f", peak {peak:.0f} MiB" if peak else "", " (best)" if improved else "")
        if is_main(args):
            ckpt = {"model": model_without_ddp.state_dict(), "optimizer": optimizer.state_dict(),
                    "lr_scheduler": lr_scheduler.state_dict(), "scaler": scaler.state_dict() if scaler else None,
                    "epoch": epoch, "args": vars(args) | {"amp_dtype": str(args.amp_dtype)},
                    "best_iou": state["best_iou"], "best_epoch": state["best_epoch"],
                    "bad_epochs": state["bad_epochs"], "history": state["history"], "metrics": stats,
                    "command": public_command("python train/train.py " + " ".join(sys.argv[1:])), "hardware": hardware,
                    "train_images": len(train_data), "val_images": len(val_data),
                    "pretrained_backbone": model_without_ddp.pretrained_backbone,
                    "model_object": model_without_ddp if pruned else None, **lineage}
            # best.pt first: a kill between the two writes leaves last.pt one epoch behind, never ahead.
            if improved:
                atomic_torch_save(ckpt, os.path.join(args.output_dir, "best.pt"))
            atomic_torch_save(ckpt, os.path.join(args.output_dir, "last.pt"))
            write_outputs(args.output_dir, state["history"], writer)
        if state["bad_epochs"] >= args.patience:
            logger.info("early stopping: no IoU gain above %.4g for %d epochs (best %.4f at epoch %d)",
                        args.min_delta, args.patience, state["best_iou"], state["best_epoch"])
            result["stopped_early"] = True
            break
    if writer is not None:
        writer.close()
    if args.distributed:
        dist.destroy_process_group()
    result.update(best_iou=state["best_iou"], best_epoch=state["best_epoch"], history=state["history"],
                  output_dir=args.output_dir)
    return result


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Train LR-ASPP MobileNetV3 card segmentation", add_help=add_help)
    p.add_argument("--data-path", default=DEFAULT_DATASET, help="dataset root (default: dataset/ at the repo root)")
    p.add_argument("--output-dir", default=None, help="default: train/runs/segmentation (or the --resume folder)")
    p.add_argument("--recipe", choices=sorted(RECIPES), default=None, help="named preset; explicit flags win")
    p.add_argument("--epochs", type=int, default=40)
    p.add_argument("--batch-size", type=int, default=16, help="per GPU")
    p.add_argument("--val-batch-size", type=int, default=8)
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW peak learning rate")
    p.add_argument("--weight-decay", type=float, default=1e-4)
    p.add_argument("--warmup-epochs", type=float, default=1.0)
    p.add_argument("--dice-weight", type=float, default=1.0, help="loss = cross-entropy + w * Dice")
    p.add_argument("--size", type=int, nargs=2, default=[IMAGE_HEIGHT, IMAGE_WIDTH], metavar=("H", "W"),
                   help="training and validation resolution (default 640 480)")
    p.add_argument("--low-res-epochs", type=int, default=0, help="first N epochs at --low-res-factor x --size")
    p.add_argument("--low-res-factor", type=float, default=0.5)
    p.add_argument("--max-train-images", type=int, default=0, help="use only the first N training images (0 = all)")
    p.add_argument("--max-val-images", type=int, default=0, help="use only the first N validation images (0 = all)")
    p.add_argument("--val-split", default="test", help="split used for validation and early stopping")
    p.add_argument("--patience", type=int, default=10, help="early stopping: epochs without val IoU gain")
    p.add_argument("--min-delta", type=float, default=1e-4, help="smallest IoU gain that counts")
    p.add_argument("--amp", action=argparse.BooleanOptionalAction, default=True,
                   help="mixed precision: FP16 + GradScaler on CUDA, bf16 on CPU")
    p.add_argument("--output-stride", type=int, choices=OUTPUT_STRIDES, default=None,
                   help="16: torchvision's LR-ASPP; 32: its last stage strided, not dilated (faster; model.py). "
                   "Default: the --weights checkpoint's, else 16")
    p.add_argument("--reduced-tail", action="store_true",
                   help="MobileNetV3's last stage with half the channels (faster; model.py)")
    p.add_argument("--pretrained", action=argparse.BooleanOptionalAction, default=True,
                   help="ImageNet backbone weights (downloaded once; falls back to scratch with a warning)")
    p.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    p.add_argument("--workers", type=int, default=DEFAULT_LOADER_WORKERS)
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0 = all cores)")
    p.add_argument("--resume", default=None, help="last.pt to continue from (exactly where it stopped)")
    p.add_argument("--weights", default=None, help="start from this checkpoint's weights (fine-tuning; new "
                   "optimizer and schedule)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    return p


if __name__ == "__main__":
    run_script(main, get_args_parser)
