"""Average the weights of segmentation checkpoints of one fine-tuning chain (a "model soup").

    python train/average_checkpoints.py round9/best.pt round10/best.pt --output averaged.pt
    python train/calibrate.py averaged.pt        # then calibrate the average, as after any fine-tune

Successive short fine-tunes of one model (train.py --weights, each from the one before) end at
points near one optimum; their uniform mean (every floating-point tensor: weights and batch-norm
statistics) often scores above each of them, with no training and no cost at inference (the same
architecture, the same operators). It only makes sense for checkpoints that share an ancestor and
an architecture: independently trained models average to noise. Choose the set on a validation
split (calibrate.py --data-path), never on a test split.

calibrate.py's offset is a shift of one bias that a plain average would blend, so a calibrated input
(a release, calibrate.py's output) is averaged as it was before calibration: its recorded offset
is taken out of its card bias first (and logged). The output is uncalibrated: calibrate it, as
after any fine-tune. It is a checkpoint like the last input's (its training record, for the model
card, plus `averaged_from`), without optimizer state: fine-tune from it with train.py --weights, it
cannot be resumed.
"""

from __future__ import annotations

import argparse
import itertools
import logging
import shlex

import torch

from common import DataError, atomic_torch_save, resolve_path, run_script
from segmentation.calibration import remove_calibration
from segmentation.model import load_checkpoint_model, output_stride, store_release

logger = logging.getLogger(__name__)


def average_state_dicts(state_dicts: list[dict], names: list[str]) -> dict:
    """The uniform mean of every floating-point tensor; integer ones (batch norm's
    num_batches_tracked) are the last state dict's. All must have the same keys and shapes."""
    ref, ref_name = state_dicts[-1], names[-1]
    for sd, name in zip(state_dicts[:-1], names[:-1]):
        if sd.keys() != ref.keys():
            diff = sorted(set(sd) ^ set(ref))
            raise DataError(f"{name}: not the architecture of {ref_name} (parameters differ, e.g. {diff[0]})")
        for k, v in sd.items():
            if v.shape != ref[k].shape:
                raise DataError(f"{name}: not the architecture of {ref_name} ({k} is {tuple(v.shape)}, "
                                f"not {tuple(ref[k].shape)}: a different pruning?)")
    out = {}
    for k, v in ref.items():
        if v.is_floating_point():
            # Summed in float64 in the order given, so the result does not depend on rounding order.
            out[k] = (sum(sd[k].double() for sd in state_dicts) / len(state_dicts)).to(v.dtype)
        else:
            out[k] = v.clone()
    return out


def same_weights(a: dict, b: dict) -> bool:
    """Equal state dicts, up to the float32 rounding that calibrating and un-calibrating leave
    (bias + offset - offset); two checkpoints of different training steps are never this close."""
    return a.keys() == b.keys() and all(
        v.shape == b[k].shape and torch.allclose(v.double(), b[k].double(), rtol=0, atol=1e-6)
        for k, v in a.items())


def main(args: argparse.Namespace) -> dict:
    paths = [resolve_path(p) for p in args.checkpoints]
    if len(paths) < 2:
        raise DataError("give at least two checkpoints to average")
    twice = next((p for i, p in enumerate(paths) if p in paths[:i]), None)
    if twice:
        raise DataError(f"{twice}: given twice; weight a checkpoint by training it, not by repeating it")
    out = resolve_path(args.output)
    if out in paths:
        raise DataError(f"{out}: --output would overwrite one of the inputs")
    models, ckpts, offsets = [], [], []
    for path in paths:
        model, ckpt = load_checkpoint_model(path)
        offsets.append(remove_calibration(model, ckpt))
        if offsets[-1]:
            logger.info("%s: calibrated; averaged without its card logit offset %+.2f", path, offsets[-1])
        models.append(model)
        ckpts.append(ckpt)
    # Same shapes are not enough: output strides 16 and 32 differ only in dilation, and two prune.py
    # runs at one ratio can keep other channels. Successive fine-tunes keep the pruning record.
    for path, model, ckpt in zip(paths[:-1], models[:-1], ckpts[:-1]):
        if output_stride(model) != output_stride(models[-1]):
            raise DataError(f"{path}: output stride {output_stride(model)}, {paths[-1]} has "
                            f"{output_stride(models[-1])}; average checkpoints of one architecture")
        if ckpt.get("pruning") != ckpts[-1].get("pruning"):
            raise DataError(f"{path}: another pruning run than {paths[-1]} (their pruning records differ); "
                            "average successive fine-tunes of one pruned model")
    states = [m.state_dict() for m in models]
    # Paths differ but weights may not: a release and the best.pt it was calibrated from are one
    # checkpoint once the offset is out, and counting it twice would weight it without saying so.
    for i, j in itertools.combinations(range(len(paths)), 2):
        if same_weights(states[i], states[j]):
            raise DataError(f"{paths[j]}: the same weights as {paths[i]} (calibration aside); "
                            "weight a checkpoint by training it, not by repeating it")
    averaged = average_state_dicts(states, paths)
    model, ckpt = models[-1], ckpts[-1]
    model.load_state_dict(averaged)
    # An input that is itself an average carries its last input's best_iou, not its own: name what it averaged.
    ckpt["averaged_from"] = [
        ({"checkpoint": p, "averaged_from": c["averaged_from"], "average_command": c.get("average_command")}
         if c.get("averaged_from") else {"checkpoint": p, "best_val_iou": c.get("best_iou")})
        | ({"calibration_removed": off} if off else {})
        for p, c, off in zip(paths, ckpts, offsets)]
    ckpt["average_command"] = shlex.join(["python", "train/average_checkpoints.py", *args.checkpoints,
                                          "--output", args.output])
    store_release(ckpt, model)
    atomic_torch_save(ckpt, out)
    logger.info("averaged %d checkpoints into %s; calibrate it (train/calibrate.py) before export", len(paths), out)
    return {"output": out, "checkpoints": paths}


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Uniform average of the weights of segmentation checkpoints that share "
                                "an architecture and an ancestor (successive fine-tunes)", add_help=add_help)
    p.add_argument("checkpoints", nargs="+", help="train.py checkpoints (calibrated ones are averaged without "
                   "their offset); the output keeps the last one's training record")
    p.add_argument("--output", required=True, help="the averaged checkpoint (.pt)")
    return p


if __name__ == "__main__":
    run_script(main, get_args_parser)
