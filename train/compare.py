"""Is one segmentation model better than another on these images, or can they not tell them apart?

    python train/compare.py candidate.onnx train/exported_models/card_segmentation_fp32.onnx \
        --data val=/data/val --data hard=/data/hard

For each named split (its --split folder, `test` by default): both models' pooled card IoU on the
same images, the difference (first model minus second), and a 95 % interval of that difference from
a paired bootstrap over images: each resample draws images with replacement and scores both models on
the same draw, so what the two get equally right or wrong cancels. An interval that contains 0 means
these images cannot tell the two models apart. `.pt` and `.onnx` alike (evaluate.py's predictor),
card where the probability is >= 0.5.
"""

from __future__ import annotations

import argparse
import json
import logging
import os

import numpy as np
from tqdm import tqdm

from common import DEFAULT_DATASET, DataError, parse_named_path, resolve_path, run_script
from segmentation.dataset import find_samples, load_sample
from segmentation.evaluation import card_overlap, load_predictor

logger = logging.getLogger(__name__)

DEFAULT_ROUNDS = 2000
CONFIDENCE = 0.95
BOOTSTRAP_CHUNK = 1 << 20   # resampled images held at once (16 MB of counts per model)


def pixel_counts(model_paths: list[str], samples: list[tuple[str, str]], device: str = "cpu", quiet: bool = False,
                 desc: str = "compare") -> np.ndarray:
    """(models, images, 2) int64: each model's card intersection and union with the truth, in pixels,
    per (image, mask) sample (each image read once for all models)."""
    predictors = [load_predictor(p, device) for p in model_paths]
    counts = np.zeros((len(model_paths), len(samples), 2), dtype=np.int64)
    for i, (img_path, mask_path) in enumerate(tqdm(samples, desc=desc, unit="img", disable=quiet)):
        image, truth = load_sample(img_path, mask_path)
        for m, predict in enumerate(predictors):
            counts[m, i] = card_overlap(predict(image), truth)[1:]
    return counts


def pooled_iou(counts: np.ndarray) -> np.ndarray:
    """Pooled IoU over the image axis (-2) of (..., images, 2) counts; 1 where nothing is card in truth
    or prediction (a card-free split scored perfectly)."""
    inter, union = counts[..., 0].sum(-1), counts[..., 1].sum(-1)
    return np.where(union > 0, inter / np.maximum(union, 1), 1.0)


def paired_bootstrap(a: np.ndarray, b: np.ndarray, rounds: int = DEFAULT_ROUNDS, seed: int = 0) -> dict:
    """Pooled IoU of a and b ((images, 2) counts of the same images), a - b, and the central
    CONFIDENCE interval of a - b over `rounds` resamples of the images, with the share of resamples
    in which a is ahead."""
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 2 or not len(a):
        raise ValueError(f"expected two (images, 2) count arrays of the same images, got {a.shape} and {b.shape}")
    rng = np.random.default_rng(seed)
    diff = np.empty(rounds)
    chunk = max(1, BOOTSTRAP_CHUNK // len(a))   # rounds per chunk: (chunk, images, 2) counts in memory
    for start in range(0, rounds, chunk):
        draws = rng.integers(0, len(a), size=(min(chunk, rounds - start), len(a)))   # image indices
        diff[start:start + len(draws)] = pooled_iou(a[draws]) - pooled_iou(b[draws])
    tail = 100 * (1 - CONFIDENCE) / 2
    lo, hi = np.percentile(diff, [tail, 100 - tail])
    iou_a, iou_b = float(pooled_iou(a)), float(pooled_iou(b))
    return {"images": len(a), "iou_a": iou_a, "iou_b": iou_b, "difference": iou_a - iou_b,
            "interval": [float(lo), float(hi)], "a_ahead_share": float(np.mean(diff > 0)), "rounds": rounds}


def verdict(r: dict) -> str:
    lo, hi = r["interval"]
    return "first ahead" if lo > 0 else "second ahead" if hi < 0 else "not told apart"


def main(args: argparse.Namespace) -> dict:
    models = [resolve_path(p) for p in (args.first, args.second)]
    for p in models:
        if not os.path.isfile(p):
            raise DataError(f"{p}: model file not found")
    if args.rounds < 100:
        raise DataError(f"--rounds must be at least 100 for a 95 % interval, got {args.rounds}")
    splits = [parse_named_path(v, "--data") for v in args.data] or [("test", resolve_path(DEFAULT_DATASET))]
    if len({name for name, _ in splits}) != len(splits):
        raise DataError(f"--data names must differ: {', '.join(name for name, _ in splits)}")
    # Every folder listed (and checked) before minutes of scoring.
    samples = {name: find_samples(path, args.split)[:args.limit or None] for name, path in splits}
    results = {}
    for name, path in splits:
        counts = pixel_counts(models, samples[name], args.device, args.quiet, desc=name)
        results[name] = {"data_path": path, **paired_bootstrap(counts[0], counts[1], args.rounds, args.seed)}
        r = results[name]
        logger.info("%s: %d images, %.4f - %.4f = %+.5f (%d %% interval %+.5f .. %+.5f)", name, r["images"],
                    r["iou_a"], r["iou_b"], r["difference"], round(100 * CONFIDENCE), *r["interval"])
    names = [os.path.basename(p) for p in models]
    if names[0] == names[1]:   # e.g. a release against an older copy of the same file: name them by path
        names = [os.path.relpath(p) for p in models]
    print(f"| split | images | `{names[0]}` | `{names[1]}` | difference | {round(100 * CONFIDENCE)} % interval "
          "(paired bootstrap) | first ahead in | verdict |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in results.items():
        print(f"| {name} | {r['images']} | {r['iou_a']:.4f} | {r['iou_b']:.4f} | {r['difference']:+.5f} | "
              f"{r['interval'][0]:+.5f} .. {r['interval'][1]:+.5f} | {100 * r['a_ahead_share']:.1f} % | {verdict(r)} |")
    result = {"first": models[0], "second": models[1], "split": args.split, "seed": args.seed, "splits": results}
    if args.json:
        with open(resolve_path(args.json), "w") as f:
            json.dump(result, f, indent=1)
            f.write("\n")
    return result


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Compare two segmentation models' card IoU on the same images, with "
                                "a paired bootstrap interval of the difference", add_help=add_help)
    p.add_argument("first", help=".pt checkpoint or .onnx export (the candidate)")
    p.add_argument("second", help=".pt checkpoint or .onnx export (what it is compared with)")
    p.add_argument("--data", action="append", default=[], metavar="NAME=DIR",
                   help="a dataset to score under NAME (repeatable; default: test=dataset/ at the repo root)")
    p.add_argument("--split", default="test", help="the split folder of every --data (default: test)")
    p.add_argument("--limit", type=int, default=0, help="first N images of each split only (0 = all)")
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help="bootstrap resamples")
    p.add_argument("--seed", type=int, default=0, help="seed of the resampling (the interval is reproducible)")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("--device", default="cpu", help="for .pt models")
    p.add_argument("--quiet", action="store_true")
    return p


if __name__ == "__main__":
    run_script(main, get_args_parser)
