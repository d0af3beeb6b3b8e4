"""Training throughput: data loader images/s and model step images/s per precision.

    python train/benchmark_training.py --what data             # loader with the training transforms
    python train/benchmark_training.py --what step             # fp32 vs autocast, 480x640 and half res
    python train/benchmark_training.py --what corner-aug       # corner augmentation, ms per image
    python train/benchmark_training.py --what generator --iters 100 --photos DIR   # scenes/s per preset

Every figure of a run comes from the same process, so the ratios are like for like. The step
benchmark feeds random tensors, isolating the model from the data pipeline.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import time

import torch

from common import DEFAULT_DATASET, IMAGE_HEIGHT, IMAGE_WIDTH, resolve_path, run_script, select_device
from segmentation.model import build_model
from train import train_step

logger = logging.getLogger(__name__)


def bench_data(args) -> dict:
    from torch.utils.data import DataLoader

    from segmentation.dataset import CardSegmentationDataset, get_training_transforms

    ds = CardSegmentationDataset(resolve_path(args.data_path), "train", get_training_transforms())
    loader = DataLoader(ds, batch_size=args.batch_size, shuffle=True, num_workers=args.workers, drop_last=True)
    n, start = 0, None
    for i, (images, _) in enumerate(loader):
        if i == 1:   # the first batch pays for the worker start-up
            start, n = time.perf_counter(), 0
        n += images.shape[0]
        if i >= args.iters:
            break
    rate = n / (time.perf_counter() - start)
    return {"what": "data", "workers": args.workers, "batch_size": args.batch_size, "images_per_s": rate}


def bench_step(args) -> list[dict]:
    device = torch.device(select_device(args.device, "timings of the CPU"))
    if device.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)
    amp_dtype = torch.float16 if device.type == "cuda" else torch.bfloat16
    rows = []
    for h, w in ((IMAGE_HEIGHT, IMAGE_WIDTH), (IMAGE_HEIGHT // 2, IMAGE_WIDTH // 2)):
        for dtype in (None, amp_dtype):
            torch.manual_seed(0)
            model = build_model(pretrained_backbone=False).to(device).train()
            opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
            scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
            x = torch.rand(args.batch_size, 3, h, w, device=device)
            y = (torch.rand(args.batch_size, h, w, device=device) > 0.5).long()
            times = []
            for i in range(args.warmup + args.iters):
                if device.type == "cuda":
                    torch.cuda.synchronize()
                t0 = time.perf_counter()
                train_step(model, x, y, opt, scaler, dtype)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                if i >= args.warmup:
                    times.append(time.perf_counter() - t0)
            med = statistics.median(times)
            rows.append({"what": "step", "device": torch.cuda.get_device_name(device) if device.type == "cuda" else
                         f"cpu x{torch.get_num_threads()}", "precision": str(dtype or "fp32").replace("torch.", ""),
                         "size": f"{w}x{h}", "batch_size": args.batch_size, "median_step_s": med,
                         "images_per_s": args.batch_size / med, "s_per_image": med / args.batch_size})
            logger.info("%s", rows[-1])
    return rows


def bench_corner_aug(args) -> list[dict]:
    """The corner pipeline (corners/augment.py) per 480x640 image on one thread, with our ISO noise and
    with Albumentations' own, and each noise alone; the variants take turns every round."""
    import albumentations as A
    import cv2
    import numpy as np

    from corners.augment import FastISONoise, get_corner_transforms
    from segmentation.dataset import find_samples, read_image

    cv2.setNumThreads(1)
    images = [read_image(path) for path, _ in find_samples(resolve_path(args.data_path), "train")[:args.batch_size * 4]]
    corners = np.array([[100, 100], [380, 100], [380, 540], [100, 540]], np.float32)
    noise = dict(color_shift=(0.01, 0.05), intensity=(0.1, 0.8), p=1.0)
    variants = {"pipeline, FastISONoise": get_corner_transforms(),
                "pipeline, A.ISONoise": get_corner_transforms(iso_noise=A.ISONoise),
                "FastISONoise alone": A.Compose([FastISONoise(**noise)]),
                "A.ISONoise alone": A.Compose([A.ISONoise(**noise)])}
    times = {k: [] for k in variants}
    for r in range(args.warmup + args.iters):
        for k, t in variants.items():
            t0 = time.perf_counter()
            for img in images:
                t(image=img, keypoints=corners) if "pipeline" in k else t(image=img)
            if r >= args.warmup:
                times[k].append((time.perf_counter() - t0) / len(images))
    rows = []
    for k, ts in times.items():
        base = statistics.median(times[k.replace("FastISONoise", "A.ISONoise")])
        med = statistics.median(ts)
        rows.append({"what": "corner-aug", "variant": k, "images": len(images), "rounds": args.iters,
                     "median_ms_per_image": 1e3 * med, "speed_vs_albumentations_noise": base / med})
        logger.info("%s", rows[-1])
    return rows


def bench_generator(args) -> list[dict]:
    """Scenes per second of each generator preset on one core, the presets taking turns scene by
    scene (same seeds), so a machine that speeds up or slows down shifts them alike."""

    from synthetic.photos import open_pool
    from synthetic.scenes import render_frame

    photos = open_pool(args.photos)
    presets = ["v1", "v2", "hard"]
    times: dict[str, list[float]] = {p: [] for p in presets}
    for i in range(args.warmup + args.iters):
        for p in presets:
            t0 = time.perf_counter()
            render_frame(0, "train", i, p, [], photos if p != "v1" else None, multi_fraction=args.multi_card)
            if i >= args.warmup:
                times[p].append(time.perf_counter() - t0)
    base = statistics.mean(times["v1"])
    rows = [{"what": "generator", "preset": p, "photos": bool(photos) and p != "v1", "scenes": args.iters,
             "images_per_s": 1 / statistics.mean(t), "speed_vs_v1": base / statistics.mean(t)}
            for p, t in times.items()]
    for r in rows:
        logger.info("%s", r)
    return rows


def main(args: argparse.Namespace) -> list[dict]:
    bench = {"data": lambda a: [bench_data(a)], "step": bench_step, "corner-aug": bench_corner_aug,
             "generator": bench_generator}
    rows = bench[args.what](args)
    for r in rows:
        print(json.dumps(r))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Training throughput benchmark", add_help=add_help)
    p.add_argument("--what", choices=["data", "step", "corner-aug", "generator"], default="step")
    p.add_argument("--photos", nargs="+", default=None, metavar="DIR",
                   help="generator: photo folders for the v2 presets")
    p.add_argument("--multi-card", type=float, default=None, metavar="F",
                   help="generator: share of card frames with several cards (default: each preset's)")
    p.add_argument("--data-path", default=DEFAULT_DATASET)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--iters", type=int, default=10, help="timed iterations (batches; scenes for the generator)")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--device", default=None)
    p.add_argument("--json", default=None, help="also write the rows to this file")
    return p


if __name__ == "__main__":
    run_script(main, get_args_parser)
