"""Keypoint-aware Albumentations 2.0.8 pipeline for the corner model.

It runs on the 480x640 portrait image itself, before Ultralytics letterboxes it (see
trainer.CornerPoseDataset), so zoom and shift act on the camera frame as a phone would. Corners
are transformed with the pixels (pixel-centre convention, like cv2) and re-sorted into TL, TR, BR,
BL afterwards: a flip or a rotation would otherwise hand the model a label order that the image no
longer shows. A corner pushed out of the frame keeps its coordinates here; the caller marks it
invisible (visibility 0).

Ultralytics' own augmentations are switched off in train_corners.py (no mosaic, flips, scale,
translate, rotation, HSV): this pipeline replaces them, so the two never stack.
"""

from __future__ import annotations

import math
import os

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")   # no PyPI version check on import (as segmentation/dataset.py)

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402

from corners.data import canonical_permutation  # noqa: E402

MAX_ZOOM = 0.5            # centred zoom-in up to +50 %
MAX_SHIFT = 0.25          # horizontal or vertical shift up to 25 % of the frame
MAX_ROTATION_DEG = 10.0   # a hand-held phone is rarely tilted more; the generator covers any angle
BORDER = {"border_mode": cv2.BORDER_CONSTANT, "fill": 0}   # black, never a reflected card copy


def poisson_small(rng: np.random.Generator, lam: float, shape: tuple[int, ...]) -> np.ndarray:
    """Poisson(lam) samples as float32, by inverse CDF on float32 uniforms: exact up to a tail
    below float32's resolution (1e-7). ISONoise draws with lam = lightness stddev x intensity
    (<= 0.4 here), where this is about 4x faster than Generator.poisson on a 480x640 frame."""
    if lam > 8.0:    # many CDF terms: numpy's sampler is the better tool there
        return rng.poisson(lam, size=shape).astype(np.float32)
    u = rng.random(shape, dtype=np.float32)
    k = np.zeros(shape, np.float32)
    term = cdf = math.exp(-lam)
    n = 0
    while 1.0 - cdf > 1e-7:
        k += u > np.float32(cdf)
        n += 1
        term *= lam / n
        cdf += term
    return k


class FastISONoise(A.ISONoise):
    """Albumentations 2.0.8's ISONoise, same parameters and noise model (Poisson impulses of
    lightness, lam = lightness stddev x intensity, each adding intensity x (1 - lightness) in HLS),
    with two costs removed: the Poisson draw is poisson_small, and the Gaussian hue jitter is left
    out, since 2.0.8 draws it with a stddev of color_shift x intensity *degrees* (<= 0.04 here),
    which changed 0.007 % of the pixels by one level on a test frame. Colour shifts come from the
    pipeline's RGBShift / HueSaturationValue instead. Albumentations' version took 27 ms per
    480x640 frame against 8.8 ms for this one (`benchmark_training.py --what corner-aug`, one
    core): the largest cost of the pipeline on the data loaders that bound GPU training."""

    def apply(self, img: np.ndarray, color_shift: float, intensity: float, random_seed: int, **params
              ) -> np.ndarray:
        if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
            raise TypeError(f"FastISONoise takes (H, W, 3) uint8 RGB, got {img.dtype} {img.shape}")
        rng = np.random.default_rng(random_seed)
        hls = cv2.cvtColor(img.astype(np.float32) * np.float32(1 / 255), cv2.COLOR_RGB2HLS)
        _, stddev = cv2.meanStdDev(hls)
        light = np.ascontiguousarray(hls[..., 1])
        k = poisson_small(rng, float(stddev[1, 0]) * intensity, light.shape)
        light += k * np.float32(intensity) * (1.0 - light)
        hls[..., 1] = light
        return cv2.convertScaleAbs(cv2.cvtColor(hls, cv2.COLOR_HLS2RGB), alpha=255.0)   # rounds, saturates


def get_corner_transforms(strength: float = 1.0, iso_noise: type[A.ISONoise] = FastISONoise) -> A.Compose:
    """The training pipeline; strength 0 disables it (validation, or a clean-data ablation).
    iso_noise: A.ISONoise gives Albumentations' slower original (for the benchmark)."""
    if strength <= 0:
        return A.Compose([], keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))
    p = min(1.0, strength)
    return A.Compose([
        # Geometry: a hand-held camera framing the card differently.
        A.HorizontalFlip(p=0.5 * p),
        A.Affine(scale=(1.0, 1.0 + MAX_ZOOM), keep_ratio=True, p=0.5 * p, **BORDER),
        A.OneOf([A.Affine(translate_percent={"x": (-MAX_SHIFT, MAX_SHIFT), "y": (0, 0)}, **BORDER),
                 A.Affine(translate_percent={"x": (0, 0), "y": (-MAX_SHIFT, MAX_SHIFT)}, **BORDER)], p=0.4 * p),
        A.Affine(rotate=(-MAX_ROTATION_DEG, MAX_ROTATION_DEG), p=0.3 * p, **BORDER),
        A.Perspective(scale=(0.02, 0.06), keep_size=True, p=0.3 * p, **BORDER),
        # Optics: focus and hand shake, kept soft so corners stay locatable.
        A.OneOf([A.GaussianBlur(blur_limit=(3, 5), sigma_limit=(0.3, 1.2)),
                 A.MotionBlur(blur_limit=(3, 9), allow_shifted=False, direction_range=(0.0, 0.0))], p=0.3 * p),
        # Sensor: ISO noise at low, medium and high gain.
        iso_noise(color_shift=(0.01, 0.05), intensity=(0.1, 0.8), p=0.3 * p),
        # Exposure, white balance, shadows and the JPEG a phone writes.
        A.RandomBrightnessContrast(brightness_limit=0.25, contrast_limit=0.25, p=0.5 * p),
        A.RandomGamma(gamma_limit=(70, 140), p=0.3 * p),
        A.OneOf([A.HueSaturationValue(hue_shift_limit=8, sat_shift_limit=25, val_shift_limit=0),
                 A.RGBShift(r_shift_limit=12, g_shift_limit=12, b_shift_limit=12)], p=0.4 * p),
        A.RandomShadow(shadow_roi=(0, 0, 1, 1), num_shadows_limit=(1, 2), p=0.2 * p),
        A.ImageCompression(quality_range=(40, 95), p=0.3 * p),
    ], keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))


def augment(transform: A.Compose, image: np.ndarray, corners: np.ndarray | None, known: np.ndarray | None = None
            ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
    """image (H, W, 3) uint8 RGB, corners (N, 4, 2) or (4, 2) pixel-centre or None ->
    (image, corners, known) of the same shapes, each card's corners re-sorted TL, TR, BR, BL.

    known (same shape as corners[..., 0], default all True) marks corners whose true position is
    known; it is permuted with them. A corner that was only clipped onto the border (a label that
    was out of frame) must stay unknown even if a shift brings its clipped point into view.
    The image size never changes."""
    if corners is None:
        return transform(image=image, keypoints=np.zeros((0, 2), np.float32))["image"], None, None
    pts = np.asarray(corners, np.float64)
    single = pts.ndim == 2
    pts = pts[None] if single else pts
    known = np.ones(pts.shape[:2], bool) if known is None else np.asarray(known, bool).reshape(pts.shape[:2])
    out = transform(image=image, keypoints=pts.reshape(-1, 2).astype(np.float32))
    moved = np.asarray(out["keypoints"], np.float64)[:, :2].reshape(pts.shape)
    order = np.stack([canonical_permutation(c) for c in moved])
    moved = np.take_along_axis(moved, order[..., None], axis=1)
    known = np.take_along_axis(known, order, axis=1)
    return out["image"], (moved[0] if single else moved), (known[0] if single else known)
