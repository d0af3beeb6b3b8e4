"""Train the corner refiner (corners/refine.py): the second stage that snaps YOLO's corners onto the
card's edges.

    python train/train_corner_refiner.py                                  # dataset/, CUDA if present
    python train/train_corner_refiner.py --epochs 60 --batch-size 64
    python train/train_corner_refiner.py --resume train/runs/corner_refiner/last.pt
    python train/train_corner_refiner.py --data-path /data/cards --weights train/checkpoints/card_corner_refiner.pt
    python train/export_corners.py <corner best.pt> --refiner train/runs/corner_refiner/best.pt

Every annotated image gives 12 crops: each corner twice, as the graph looks at it (a coarse crop,
then a finer one: corners/refine.py), and one point on each side. Each is centred on the true
point moved by a random jitter; the refiner learns to point back at it. The jitter does not come
from the corner model, so the refiner does not depend on one detector's mistakes: for the coarse
look mostly Gaussian (--jitter-px, 6 px: the shipped detector's typical error) with a share spread
uniformly up to 26 px (its tail); for the finer look and the sides smaller (FINE_JITTER_PX,
EDGE_JITTER_PX), a share up to the crop's reach. Corners outside the frame are left out. Training
crops also get random brightness, contrast, colour, noise, blur and a mirror about the crop's
diagonal (which keeps the card towards the bottom right). The validation split's jitter is fixed,
so epochs compare.

Writes last.pt (every epoch) and best.pt (lowest validation mean error), both atomically,
metrics.csv and TensorBoard events. --resume continues a run exactly (its data, length and
schedule come from last.pt); --weights starts a new run from a refiner's weights (fine-tuning the
committed one on your data, say). CUDA with FP16 mixed precision when present; the CPU works
(about 70 s per epoch of 8000 images on 2 cores) with a warning.
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
from corners.data import HIDDEN_STATE, card_samples, corner_samples, corner_states
from corners.predict import load_checked
from corners.refine import (
    CROP_PX,
    EDGE_SPACING,
    LOOK_SPACING,
    OUTSIDE_MARGIN_PX,
    VISIBLE_THRESHOLD,
    CornerRefiner,
    checkpoint_geometry,
    crop_offsets,
    extract_crops,
    load_refiner,
    refiner_geometry,
    rotations,
)
from segmentation.dataset import find_samples, read_mask
from synthetic.v2 import SKIN_TONES

logger = logging.getLogger(__name__)

# A jitter's reach: the point stays inside the crop with a 6 px margin (26 px at spacing 2, 18 at 1.5).
def max_jitter_px(spacing: float) -> float:
    return CROP_PX / 2 * spacing - 6


UNIFORM_JITTER_SHARE = 0.2
# The finer look starts where the coarse one ended (a pixel or two off, up to several px under a
# thumb); an edge crop on the side of the refined quad (a few px off). Wider than that: a jitter
# tighter than the look's reach teaches the network to stay near the crop centre (with a 2 px
# jitter a full-resolution look made a 5 px error a 1.9 px median one; the coarse look, 1.2 px).
FINE_JITTER_PX, EDGE_JITTER_PX = 4.0, 4.0
# Edge crops: one point per side and image, anywhere between 10 % and 90 % of the side. Their frame
# turns up to a few degrees off the true side: in the graph it comes from refined corners.
EDGE_T_RANGE = (0.1, 0.9)
EDGE_ANGLE_JITTER_DEG = 4.0
# A corner (edge point) is in sight when the mask is card this far inside the card from it: a
# finger over it is not card in the mask. Works on any dataset with masks, the users' included.
# A corner is probed along its bisector past the card's rounded corner (3 mm radius: the arc is
# 0.41 x radius, up to 8 px in, from the geometric corner of a card that fills the frame).
PROBE_PX, CORNER_PROBE_PX = 3.0, 10.0
VISIBILITY_LOSS_WEIGHT = 0.5
# Drawn on training crops: a finger over the target (it becomes hidden) or beside it (it stays in
# sight, so the network learns to ignore the finger's outline), another card's edge, glare, a
# sleeve's bright edge. Shares of crops; the datasets' own hands come on top.
FINGER_OVER, FINGER_BESIDE, OTHER_CARD, GLARE, SLEEVE = 0.15, 0.1, 0.05, 0.05, 0.05
CSV_FIELDS = ["epoch", "lr", "train_loss", "val_jitter_mean_px", "val_mean_px", "val_median_px",
              "val_within_1px", "val_within_2px", "val_within_5px", "val_coarse_mean_px", "val_hidden_mean_px",
              "val_hidden_within_5px", "val_edge_mean_px", "val_visibility_acc", "epoch_s"]
VAL_EPOCH = -1                     # the jitter stream of the validation split, the same every epoch
# What a resumed run keeps from its start (the rest, e.g. --workers or --device, may change).
RUN_OPTIONS = ("data_path", "val_split", "epochs", "batch_size", "lr", "weight_decay", "jitter_px", "seed")
CORNER, EDGE = 0, 1
# An image's 12 crops: the 4 corners' coarse looks, their finer looks, then a point on each side.
ITEM_KIND = np.array([CORNER] * 8 + [EDGE] * 4)
ITEM_SPACING = np.array([LOOK_SPACING[0]] * 4 + [LOOK_SPACING[-1]] * 4 + [EDGE_SPACING] * 4, np.float32)


def _jitter(rng: np.random.Generator, n: int, jitter_px: float, reach: float) -> np.ndarray:
    """(n, 2) px: Gaussian, a share spread uniformly to the crop's reach (the detector's tail)."""
    jitter = rng.normal(0.0, jitter_px, (n, 2))
    wide = rng.random(n) < UNIFORM_JITTER_SHARE
    jitter[wide] = rng.uniform(-reach, reach, (int(wide.sum()), 2))
    return np.clip(jitter, -reach, reach)


def _in_sight(mask: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """mask (H, W) bool card, pts (n, 2) continuous px -> (n,) bool: card pixel there."""
    h, w = mask.shape
    ij = np.floor(pts).astype(np.int64)
    inside = (ij[:, 0] >= 0) & (ij[:, 0] < w) & (ij[:, 1] >= 0) & (ij[:, 1] < h)
    out = np.zeros(len(pts), bool)
    out[inside] = mask[ij[inside, 1], ij[inside, 0]]
    return out


class RefinerCrops(Dataset):
    """Item i: card i's 12 crops, every card of every image in order (ITEM_KIND, ITEM_SPACING: 4 coarse
    and 4 finer corner crops, 4 edge crops) (12, 3, 32, 32) float 0..1; the target offset from each
    crop centre in crop pixels (12, 2); which target coordinates count (12, 2) (an edge crop's x is
    free along the edge); whether the corner or edge point is in sight (12,) float; and which crops
    to use (12,) bool (corners far outside the frame are not refined, so not trained)."""

    def __init__(self, data_path: str, split: str, jitter_px: float, augment: bool, seed: int):
        images = corner_samples(data_path, split)
        samples = card_samples(images)
        if not samples:
            raise DataError(f"{data_path}: the {split} split has no annotated corners to train the refiner on")
        self.paths = [p for p, _, _ in samples]
        masks = dict(find_samples(data_path, split))                             # image path -> mask path
        self.masks = [masks[p] for p in self.paths]
        self.corners = np.stack([c for _, _, c in samples]).astype(np.float32)  # (cards, 4, 2) pixel-centre
        # A corner under another card is card in the mask: the generator's states say it is hidden.
        states = corner_states(data_path, split, images)
        self.hidden = np.zeros((len(samples), 4), bool) if states is None else \
            np.concatenate([s for s in states if len(s)]) == HIDDEN_STATE
        self.jitter_px, self.augment, self.seed = jitter_px, augment, seed
        self.epoch = 0
        self.rot = rotations()

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        # One stream per (seed, epoch, image): reproducible whatever the worker count.
        rng = np.random.default_rng([self.seed, self.epoch + 1, i])
        quad = self.corners[i].astype(np.float64) + 0.5                          # (4, 2) continuous px
        image = torch.from_numpy(load_checked(self.paths[i])).permute(2, 0, 1).float().div_(255)
        mask = read_mask(self.masks[i]) > 0
        h, w = mask.shape
        # Corners: centre = truth - jitter, so the target is R_k^T @ jitter / spacing in the crop.
        coarse, fine = LOOK_SPACING[0], LOOK_SPACING[-1]
        jitter = np.concatenate([_jitter(rng, 4, self.jitter_px, max_jitter_px(coarse)),
                                 _jitter(rng, 4, FINE_JITTER_PX, max_jitter_px(fine))])
        rot_c = np.tile(self.rot.double().numpy(), (2, 1, 1))                    # (8, 2, 2)
        target_c = np.einsum("kji,kj->ki", rot_c, jitter) / ITEM_SPACING[:8, None]
        unit = lambda x: x / np.linalg.norm(x, axis=-1, keepdims=True).clip(1e-9)   # noqa: E731
        probe_c = quad + CORNER_PROBE_PX * unit(unit(quad[[1, 2, 3, 0]] - quad) + unit(quad[[3, 0, 1, 2]] - quad))
        margin = OUTSIDE_MARGIN_PX
        use_c = ((quad[:, 0] >= -margin) & (quad[:, 0] <= w + margin) & (quad[:, 1] >= -margin)
                 & (quad[:, 1] <= h + margin))
        # Edges: a point on each true side, a crop frame turned a little off it and moved across it.
        a, b = quad, quad[[1, 2, 3, 0]]
        t = rng.uniform(*EDGE_T_RANGE, 4)[:, None]
        p = a + t * (b - a)
        u = (b - a) / np.linalg.norm(b - a, axis=-1, keepdims=True).clip(1e-9)
        v = np.stack([-u[:, 1], u[:, 0]], -1)                                    # into the card
        ang = np.radians(rng.normal(0.0, EDGE_ANGLE_JITTER_DEG, 4))
        cos, sin = np.cos(ang), np.sin(ang)
        cu = np.stack([u[:, 0] * cos - u[:, 1] * sin, u[:, 0] * sin + u[:, 1] * cos], -1)
        cv = np.stack([-cu[:, 1], cu[:, 0]], -1)
        shift = _jitter(rng, 4, EDGE_JITTER_PX, max_jitter_px(EDGE_SPACING))
        centre_e = p - shift[:, 1:2] * cv + shift[:, 0:1] * 0.5 * cu
        # Where the true side crosses the crop's vertical axis: centre + s * cv on the line (p, u).
        cross = lambda x, y: x[:, 0] * y[:, 1] - x[:, 1] * y[:, 0]               # noqa: E731
        s_cross = cross(p - centre_e, u) / cross(cv, u)
        target_e = np.stack([np.zeros(4), s_cross / EDGE_SPACING], -1)
        rot_e = np.stack([cu, cv], -1)                                           # columns: crop x, crop y
        centres = np.concatenate([np.tile(quad, (2, 1)) - jitter, centre_e])
        rot = torch.from_numpy(np.concatenate([rot_c, rot_e])).float()
        crops = extract_crops(image[None], torch.from_numpy(centres).float()[None], rot,
                              torch.from_numpy(ITEM_SPACING)[None])              # (12, 3, 32, 32)
        target = np.concatenate([target_c, target_e]).astype(np.float32)
        weight = np.concatenate([np.ones((8, 2)), np.tile([[0.0, 1.0]], (4, 1))]).astype(np.float32)
        weight[np.abs(target).max(1) > CROP_PX / 2 - 2] = 0.0      # the target is not in the crop
        # The edge point the crop answers for: where the side crosses the crop's vertical axis.
        q = centre_e + s_cross[:, None] * cv
        corner_seen = _in_sight(mask, probe_c) & ~self.hidden[i]
        visible = np.concatenate([corner_seen, corner_seen, _in_sight(mask, q + PROBE_PX * v)]).astype(np.float32)
        crops, target = torch.from_numpy(crops.numpy()), torch.from_numpy(target)
        visible = torch.from_numpy(visible)
        if self.augment:
            crops, visible = occlude(crops, target, visible, rng, ITEM_SPACING)
            crops, target = photometric_and_mirror(crops, target, rng, ITEM_KIND)
        use = np.concatenate([use_c, use_c, np.ones(4, bool)])
        return crops, target, torch.from_numpy(weight), visible, torch.from_numpy(use)


def occlude(crops: torch.Tensor, target: torch.Tensor, visible: torch.Tensor, rng: np.random.Generator,
            spacing: np.ndarray | None = None):
    """Occluders drawn on crops (n, 3, 32, 32) around each crop's target point (n, 2, crop px): a
    finger over it (then hidden: visible 0) or beside it, another card's straight edge, a glare
    band, a sleeve's bright edge. Fingers are capsules with cylinder shading in the generator's skin
    tones. Sizes are in image px: spacing (n,) image px per crop px (default 1)."""
    n = len(crops)
    spacing = np.ones(n) if spacing is None else spacing
    out, visible = crops.clone(), visible.clone()
    offsets = crop_offsets().view(CROP_PX, CROP_PX, 2).numpy()                   # (32, 32, 2) x, y
    for j in range(n):
        g = offsets * float(spacing[j])                                          # image px from the centre
        tx, ty = (target[j] * float(spacing[j])).tolist()
        r = rng.random()
        if r < FINGER_OVER + FINGER_BESIDE:
            radius = rng.uniform(7, 24)
            theta = rng.uniform(0, 2 * np.pi)
            axis = np.array([np.cos(theta), np.sin(theta)])                      # from the tip out of the crop
            across = np.array([-axis[1], axis[0]])
            if r < FINGER_OVER:   # the target under the finger, away from its rim
                tip = (np.array([tx, ty]) - axis * rng.uniform(-0.5 * radius, 30)
                       + across * rng.uniform(-0.5, 0.5) * radius)
            else:                 # beside it: the rim 2-14 px from the target
                tip = (np.array([tx, ty]) - axis * rng.uniform(-10, 30)
                       + across * (radius + rng.uniform(2, 14)) * rng.choice([-1, 1]))
            d = _segment_distance(g, tip, tip + axis * 120)
            shade = np.sqrt(np.clip(1 - (d / radius) ** 2, 0, 1))
            alpha = np.clip(radius - d + 0.5, 0, 1)
            skin = np.asarray(SKIN_TONES[rng.integers(len(SKIN_TONES))], np.float64) / 255 * rng.uniform(0.6, 1.1)
            colour = skin[:, None, None] * (0.45 + 0.55 * shade)[None]
            a = torch.from_numpy(alpha[None].astype(np.float32))
            out[j] = out[j] * (1 - a) + torch.from_numpy(colour.astype(np.float32)) * a
            if _segment_distance(np.array([[tx, ty]]), tip, tip + axis * 120)[0] < radius:
                visible[j] = 0.0
        elif r < FINGER_OVER + FINGER_BESIDE + OTHER_CARD:
            # A straight edge 4-25 px from the target, everything beyond it another flat surface.
            normal = rng.normal(size=2)
            normal /= np.linalg.norm(normal)
            dist = rng.uniform(4, 25)
            side = (g - np.array([tx, ty])) @ normal - dist                       # > 0 beyond the edge
            a = torch.from_numpy(np.clip(side + 0.5, 0, 1)[None].astype(np.float32))
            colour = torch.from_numpy(rng.uniform(0, 1, (3, 1, 1)).astype(np.float32))
            out[j] = out[j] * (1 - a) + colour * a
        elif r < FINGER_OVER + FINGER_BESIDE + OTHER_CARD + GLARE + SLEEVE:
            normal = rng.normal(size=2)
            normal /= np.linalg.norm(normal)
            offset = (g - np.array([tx, ty]) - rng.uniform(-20, 20, 2)) @ normal
            if r < FINGER_OVER + FINGER_BESIDE + OTHER_CARD + GLARE:      # a soft glare band
                band = np.exp(-0.5 * (offset / rng.uniform(3, 12)) ** 2) * rng.uniform(0.3, 0.8)
            else:                                                          # a sleeve's thin bright edge
                band = np.exp(-0.5 * (offset / rng.uniform(0.6, 1.5)) ** 2) * rng.uniform(0.3, 0.6)
            out[j] = out[j] + torch.from_numpy(band[None].astype(np.float32))
    return out.clamp_(0, 1), visible


def _segment_distance(pts: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(..., 2) points -> (...) distance to the segment a-b."""
    ab = b - a
    t = np.clip(((pts - a) @ ab) / float(ab @ ab), 0, 1)
    return np.linalg.norm(pts - (a + t[..., None] * ab), axis=-1)


def photometric_and_mirror(crops: torch.Tensor, target: torch.Tensor, rng: np.random.Generator,
                           kind: np.ndarray | None = None):
    """Per crop: gain 0.6-1.4, per-channel offset +-0.08, Gaussian noise up to 0.04, a blur
    (sigma 0.5-1.5 px) on a third of them, and a mirror on half: a corner crop about its main
    diagonal (x <-> y: the card still extends to +x and +y, the target swaps its coordinates), an
    edge crop left-right (the edge stays horizontal with the card below; x changes sign)."""
    n = len(crops)
    kind = np.full(n, CORNER) if kind is None else kind
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
    mirror = rng.random(n) < 0.5
    diag = torch.from_numpy(mirror & (kind == CORNER))
    side = torch.from_numpy(mirror & (kind == EDGE))
    out = torch.where(diag[:, None, None, None], out.transpose(-1, -2), out)
    out = torch.where(side[:, None, None, None], out.flip(-1), out)
    target = torch.where(diag[:, None], target.flip(-1), target)
    target = torch.where(side[:, None], target * torch.tensor([-1.0, 1.0]), target)
    return out.clamp_(0, 1), target


def _worker_init(worker_id: int) -> None:
    torch.set_num_threads(1)   # crops are cheap; workers must not fight the training threads


def make_loader(dataset: RefinerCrops, batch_size: int, workers: int, shuffle: bool, epoch: int, seed: int,
                pin: bool) -> DataLoader:
    dataset.epoch = epoch
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=workers, pin_memory=pin,
                      drop_last=shuffle and len(dataset) > batch_size, worker_init_fn=_worker_init,
                      generator=torch.Generator().manual_seed(seed * 1000 + epoch),
                      persistent_workers=False)


def flatten(batch, device):
    """(B, 12, ...) -> (B * 12, ...) crops, targets, target weights, visibility, and per crop its
    kind (0 corner, 1 edge) and spacing (image px per crop px), keeping the crops in use."""
    crops, target, weight, visible, use = batch
    use = use.reshape(-1)
    kind = torch.from_numpy(ITEM_KIND).repeat(len(batch[0]))[use]
    spacing = torch.from_numpy(ITEM_SPACING).repeat(len(batch[0]))[use]
    return (crops.reshape(-1, 3, CROP_PX, CROP_PX)[use].to(device, non_blocking=True),
            target.reshape(-1, 2)[use].to(device, non_blocking=True),
            weight.reshape(-1, 2)[use].to(device, non_blocking=True),
            visible.reshape(-1)[use].to(device, non_blocking=True), kind, spacing)


def refiner_loss(pred: torch.Tensor, logit: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                 visible: torch.Tensor) -> torch.Tensor:
    """Smooth L1 in crop pixels (L2 below 1 px for sub-pixel precision, L1 above so far jitters do
    not dominate) on the coordinates that count, hidden corners included (their true geometric
    place), plus the visibility's binary cross-entropy."""
    offset = F.smooth_l1_loss(pred.float(), target, beta=1.0, reduction="none") * weight
    offset = offset.sum() / weight.sum().clamp(min=1)
    return offset + VISIBILITY_LOSS_WEIGHT * F.binary_cross_entropy_with_logits(logit.float(), visible)


@torch.no_grad()
def evaluate(model: CornerRefiner, loader: DataLoader, device: str, amp: bool) -> dict:
    """In image px: the finer look's errors on corners in sight (the headline: the answer the graph
    returns) and on hidden ones, the coarse look's on corners in sight, the edge crops' error
    across the edge, and the visibility head's accuracy at VISIBLE_THRESHOLD (every crop)."""
    model.eval()
    rows = {"err": [], "jit": [], "vis": [], "kind": [], "ok": [], "edge": [], "spacing": []}
    for batch in loader:
        crops, target, weight, visible, kind, spacing = flatten(batch, device)
        with torch.autocast(torch.device(device).type, torch.float16, enabled=amp):
            pred, logit = model(crops)
        counted = weight.sum(-1).cpu() > 0
        rows["err"].append(torch.linalg.norm(pred.float() - target, dim=-1).cpu() * spacing)
        rows["edge"].append((pred.float()[:, 1] - target[:, 1]).abs().cpu() * spacing)
        rows["jit"].append(torch.linalg.norm(target, dim=-1).cpu() * spacing)
        rows["vis"].append(visible.cpu())
        rows["kind"].append(kind)
        rows["spacing"].append(spacing)
        rows["ok"].append((logit.float().sigmoid() >= VISIBLE_THRESHOLD).float().cpu() == visible.cpu())
        rows.setdefault("counted", []).append(counted)
    r = {k: torch.cat(v).numpy() for k, v in rows.items()}
    corner, edge = (r["kind"] == CORNER) & r["counted"], (r["kind"] == EDGE) & r["counted"]
    fine, coarse = corner & (r["spacing"] == LOOK_SPACING[-1]), corner & (r["spacing"] == LOOK_SPACING[0])
    seen, hidden = fine & (r["vis"] > 0.5), fine & (r["vis"] < 0.5)
    err = r["err"][seen]
    nan = float("nan")
    return {"val_jitter_mean_px": float(r["jit"][seen].mean()), "val_mean_px": float(err.mean()),
            "val_median_px": float(np.median(err)),
            **{f"val_within_{t}px": float((err <= t).mean() * 100) for t in (1, 2, 5)},
            "val_coarse_mean_px": float(r["err"][coarse & (r["vis"] > 0.5)].mean()),
            "val_hidden_mean_px": float(r["err"][hidden].mean()) if hidden.any() else nan,
            "val_hidden_within_5px": float((r["err"][hidden] <= 5).mean() * 100) if hidden.any() else nan,
            "val_edge_mean_px": float(r["edge"][edge].mean()) if edge.any() else nan,
            "val_visibility_acc": float(r["ok"].mean() * 100)}


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
    best = os.path.join(os.path.dirname(path), "best.pt")
    if "visible.weight" not in ckpt["model"]:
        raise DataError(f"{path}: a run from before the refiner's visibility head cannot be resumed; start a new "
                        f"run from its weights with --weights {best}")
    saved = checkpoint_geometry(ckpt)
    if saved != refiner_geometry():
        raise DataError(f"{path}: a run on other crops ({saved}; this code crops {refiner_geometry()}) cannot be "
                        f"resumed; start a new run from its weights with --weights {best}")
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

    train_set = RefinerCrops(data_path, "train", args.jitter_px, augment=True, seed=args.seed)
    val_set = RefinerCrops(data_path, args.val_split, args.jitter_px, augment=False, seed=args.seed)
    model = CornerRefiner()
    if args.weights:   # fine-tuning (e.g. the committed refiner on your own data): weights only
        model.load_state_dict(load_refiner(resolve_path(args.weights), finetune=True).state_dict(), strict=False)
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
    logger.info("%d training and %d validation images, 12 crops each (4 corners twice, 4 edge points); %d epochs on %s",
                len(train_set), len(val_set), args.epochs, device)
    for epoch in range(start, args.epochs):
        t0 = time.time()
        model.train()
        total, n = 0.0, 0
        loader = make_loader(train_set, args.batch_size, args.workers, True, epoch, args.seed, pin)
        for batch in tqdm(loader, desc=f"epoch {epoch}", unit="batch", disable=args.quiet, leave=False):
            crops, target, weight, visible, _, _ = flatten(batch, device)
            with torch.autocast(torch.device(device).type, torch.float16, enabled=amp):
                pred, logit = model(crops)
            loss = refiner_loss(pred, logit, target, weight, visible)
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
                **refiner_geometry(), "args": {k: v for k, v in vars(args).items()}}
        atomic_torch_save(ckpt, os.path.join(output_dir, "last.pt"))
        if improved:
            # best.pt carries only what inference needs: loadable with weights_only=True.
            atomic_torch_save({"model": model.state_dict(), **refiner_geometry(), "epoch": epoch,
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
    p.add_argument("--batch-size", type=int, default=16, help="cards per batch (12 crops each)")
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
