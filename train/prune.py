"""Structured channel pruning of a trained segmentation checkpoint with Torch-Pruning.

    python train/prune.py train/checkpoints/card_segmentation.pt --pruning-ratios 0.3 0.5 0.7
    python train/prune.py best.pt --target-macs 0.55 --iterative-steps 3 --finetune-epochs 2

Channels are removed for real (smaller tensors, fewer MACs), unlike torch.nn.utils.prune's
masks. Per ratio: prune in --iterative-steps steps, recalibrate BatchNorm after each, fine-tune
between steps with train.py's own loop (AMP on CUDA), save <output-dir>/pruned_<ratio>.pt (the
whole module: the architecture changed), export it through export.py's parity gate as
exported_models/card_segmentation_pruned<NN>.onnx, and write <output-dir>/report.md comparing
every model measured in the same command. The two 1x1 classifier convolutions are never pruned,
so the model keeps its 2 output classes.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import tempfile

import torch
from torch import nn

import export
import train
from common import (
    DEFAULT_RUNS_DIR,
    EXPORT_DIR,
    ScriptError,
    atomic_torch_save,
    atomic_write_bytes,
    resolve_path,
    run_script,
)
from onnx_utils import machine_description, onnx_latencies
from segmentation.export import export_and_verify, gate_images
from segmentation.metrics import segmentation_loss
from segmentation.model import checkpoint_architecture, load_checkpoint_model, output_stride
from segmentation.pruning import count_macs_params, find_ratio_for_macs, make_pruner, recalibrate_bn

logger = logging.getLogger(__name__)

def taylor_gradients(model: nn.Module, loader, args, batches: int = 4) -> None:
    """Taylor importance needs gradients of the loss on real data."""
    model.train()
    model.zero_grad()
    device = torch.device(args.device)
    for i, (images, masks) in enumerate(loader):
        if i >= batches:
            break
        segmentation_loss(model(images.to(device)), masks.to(device), args.dice_weight).backward()


def fine_tune(model: nn.Module, train_data, args, epochs: int, tag: str) -> None:
    if epochs <= 0:
        return
    ft_args = copy.copy(args)
    ft_args.epochs = epochs
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    scheduler = train.create_lr_scheduler(optimizer, ft_args, len(train.make_loader(train_data, args, True, 0)))
    scaler = torch.amp.GradScaler("cuda") if args.amp_dtype == torch.float16 else None
    for epoch in range(epochs):
        stats = train.train_one_epoch(model, train.make_loader(train_data, args, True, epoch), optimizer, scheduler,
                                      scaler, ft_args, epoch)
        logger.info("%s fine-tune epoch %d/%d: loss %.4f", tag, epoch + 1, epochs, stats["train_loss"])


def prune_checkpoint(base: nn.Module, ratio: float, train_set, train_data, val_data, args) -> dict:
    """Prune a copy of `base` to `ratio` in steps with fine-tuning; returns the row of the report."""
    model = copy.deepcopy(base).to(args.device)
    pruner = make_pruner(model, ratio, args.iterative_steps, args.importance)
    calib = train.make_loader(train_data, args, True, 0)
    row = {"ratio": ratio}
    for step in range(args.iterative_steps):
        if args.importance == "taylor":
            taylor_gradients(model, calib, args)
        pruner.step()
        model.zero_grad(set_to_none=True)
        recalibrate_bn(model, calib, args)
        if step == args.iterative_steps - 1:
            row["iou_pruned"] = train.evaluate(model, train.make_loader(val_data, args, False, 0), args)["iou"]
        fine_tune(model, train_data, args, args.finetune_epochs, f"ratio {ratio} step {step + 1}")
    row["iou_finetuned"] = train.evaluate(model, train.make_loader(val_data, args, False, 0), args)["iou"]
    model = model.cpu().float().eval()
    row["macs"], row["params"] = count_macs_params(model)
    row["model"] = model
    return row


def main(args: argparse.Namespace) -> list[dict]:
    out_dir = resolve_path(args.output_dir or os.path.join(DEFAULT_RUNS_DIR, "pruning"))
    args.output_dir = out_dir   # before resolve_args, which would default it to the training folder
    if args.output_stride is not None or args.reduced_tail:
        raise ScriptError("prune.py keeps the checkpoint's architecture: change it with train.py "
                          "(--output-stride, --reduced-tail) first, then prune that checkpoint")
    args = train.resolve_args(args)
    args.distributed, args.rank, args.world_size, args.local_rank = False, 0, 1, 0
    torch.manual_seed(args.seed)
    os.makedirs(out_dir, exist_ok=True)
    base, ckpt = load_checkpoint_model(resolve_path(args.checkpoint))
    base = base.float().to(args.device)
    train_set, train_data, val_data = train.build_datasets(args)
    val_loader = train.make_loader(val_data, args, False, 0)
    base_macs, base_params = count_macs_params(base)
    rows = [{"ratio": 0.0, "name": "unpruned", "macs": base_macs, "params": base_params,
             "iou_pruned": None, "iou_finetuned": train.evaluate(base, val_loader, args)["iou"],
             "model": copy.deepcopy(base).cpu()}]
    ratios = list(args.pruning_ratios)
    if args.target_macs:
        ratios = [find_ratio_for_macs(base, args.target_macs, args.importance)]
        logger.info("ratio %.3f keeps <= %.2f x the MACs", ratios[0], args.target_macs)
    for ratio in ratios:
        row = prune_checkpoint(base, ratio, train_set, train_data, val_data, args)
        row["name"] = f"card_segmentation_pruned{round(ratio * 100):02d}"
        path = os.path.join(out_dir, f"pruned_{round(ratio * 100):02d}.pt")
        row["info"] = {k: row[k] for k in ("ratio", "macs", "params", "iou_pruned", "iou_finetuned")} | {
            "base_macs": base_macs, "base_params": base_params, "base_iou": rows[0]["iou_finetuned"],
            "importance": args.importance, "iterative_steps": args.iterative_steps,
            "finetune_epochs": args.finetune_epochs}
        row["checkpoint"] = path
        save_pruned(row, args, ckpt)   # saved now: a crash later in the run keeps this ratio's work
        logger.info("ratio %.2f: MACs %.2fG -> %.2fG, IoU %.4f after pruning, %.4f after fine-tuning -> %s", ratio,
                    base_macs / 1e9, row["macs"] / 1e9, row["iou_pruned"], row["iou_finetuned"], path)
        rows.append(row)
    measure_and_report(rows, args, out_dir)
    for row in rows[1:]:   # the side-by-side latency belongs with the checkpoint (and the model card)
        row["info"]["latency_ratio"] = row["latency_ms"] / rows[0]["latency_ms"]
        save_pruned(row, args, ckpt)
    if args.export:
        for row in rows[1:]:
            argv = [row["checkpoint"], "--name", row["name"], "--data-path", args.data_path, "--output-dir",
                    resolve_path(args.export_dir)]
            export.main(export.get_args_parser().parse_args(
                argv + ["--export-command", "python train/export.py " + " ".join(argv)]))
    return rows


def save_pruned(row: dict, args, source: dict) -> None:
    atomic_torch_save({"model_object": row["model"], "model": row["model"].state_dict(), "pruning": row["info"],
                       "source_checkpoint": os.path.basename(args.checkpoint),
                       # The architecture is the source's: recorded for the model card and later runs.
                       "args": vars(args) | {"amp_dtype": str(args.amp_dtype),
                                             "output_stride": output_stride(row["model"]),
                                             "reduced_tail": checkpoint_architecture(source)[1]},
                       "history": source.get("history", [])}, row["checkpoint"])


def measure_and_report(rows: list[dict], args, out_dir: str) -> None:
    """FP32 ONNX size and onnxruntime CPU latency of every row, measured here side by side."""
    images = gate_images(args.data_path, 4, args.val_split)
    with tempfile.TemporaryDirectory() as tmp:
        paths = [os.path.join(tmp, row["name"] + ".onnx") for row in rows]
        for row, path in zip(rows, paths):
            export_and_verify(row["model"], path, fp16=False, images=images)
            row["onnx_fp32_bytes"] = os.path.getsize(path)
        for row, ms in zip(rows, onnx_latencies(paths, args.latency_runs)):   # interleaved
            row["latency_ms"] = ms
    base = rows[0]
    lines = ["# Pruning report", "",
             f"Checkpoint `{os.path.basename(args.checkpoint)}`, {args.importance} importance, "
             f"{args.iterative_steps} step(s), {args.finetune_epochs} fine-tune epoch(s) per step, validation on "
             f"`{args.val_split}` ({args.data_path}). Latency: onnxruntime CPU, FP32 ONNX, 1x3x640x480, median of "
             f"{args.latency_runs} runs, the models taking turns run by run, on {machine_description()}.", "",
             "| model | ratio | params | MACs (G) | MACs vs unpruned | FP32 ONNX | CPU latency | latency vs unpruned "
             "| IoU after pruning | IoU after fine-tuning | IoU change (points) |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        pruned = "–" if r["iou_pruned"] is None else f"{r['iou_pruned']:.4f}"
        lines.append(f"| {r['name']} | {r['ratio']:.2f} | {r['params'] / 1e6:.2f} M | {r['macs'] / 1e9:.3f} | "
                     f"{r['macs'] / base['macs']:.2f}x | {r['onnx_fp32_bytes'] / 1e6:.2f} MB | "
                     f"{r['latency_ms']:.1f} ms | {r['latency_ms'] / base['latency_ms']:.2f}x | {pruned} | "
                     f"{r['iou_finetuned']:.4f} | {100 * (r['iou_finetuned'] - base['iou_finetuned']):+.2f} |")
    text = "\n".join(lines) + "\n"
    atomic_write_bytes(os.path.join(out_dir, "report.md"), text.encode())
    print(text)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    parent = train.get_args_parser(add_help=False)
    p = argparse.ArgumentParser(description="Structured pruning of the segmentation model", parents=[parent],
                                add_help=add_help, conflict_handler="resolve")
    p.add_argument("checkpoint", help="train.py checkpoint to prune")
    p.add_argument("--pruning-ratios", type=float, nargs="+", default=[0.3, 0.5, 0.7],
                   help="channel ratios to remove, one pruned model each")
    p.add_argument("--target-macs", type=float, default=None,
                   help="instead of ratios: keep at most this fraction of the MACs (e.g. 0.6)")
    p.add_argument("--iterative-steps", type=int, default=2)
    p.add_argument("--finetune-epochs", type=int, default=2, help="per step")
    p.add_argument("--importance", choices=["magnitude", "taylor"], default="magnitude")
    p.add_argument("--lr", type=float, default=3e-4, help="fine-tuning peak learning rate")
    p.add_argument("--output-dir", default=None, help="default: train/runs/pruning")
    p.add_argument("--latency-runs", type=int, default=20)
    p.add_argument("--export", action="store_true",
                   help="also export each pruned model with export.py (FP16 + FP32, gate, model card)")
    p.add_argument("--export-dir", default=EXPORT_DIR)
    return p


if __name__ == "__main__":
    run_script(main, get_args_parser)
