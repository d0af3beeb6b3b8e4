"""A pool of the user's photos for the generator: backgrounds and card art (`--photos DIR [DIR ...]`).

Every file is decoded once, in the parent process before the workers fork, so a corrupt file is
an error naming it before any image is written, and the workers share the decoded pixels. Photos
are kept at most MAX_SIDE px on their longer side: the generator never needs more (a 480x640
frame, a 320x448 card raster), and 200 wallpapers at 4K would not fit in memory.
"""

from __future__ import annotations

import os

import cv2
import numpy as np

from common import DataError, resolve_path

PHOTO_EXTS = (".jpg", ".jpeg", ".png", ".bmp", ".webp")
MAX_SIDE = 960
MIN_SIDE = 32   # smaller files are icons, not photos


def list_photos(folder: str, option: str = "--photos") -> list[str]:
    """Sorted image files under folder (recursive: wallpaper packages nest them by resolution)."""
    if not os.path.isdir(folder):
        raise DataError(f"{option}: {folder} is not a folder")
    paths = sorted(os.path.join(root, f) for root, _, files in os.walk(folder, followlinks=True)
                   for f in files if f.lower().endswith(PHOTO_EXTS))
    if not paths:
        raise DataError(f"{option}: no images ({', '.join(PHOTO_EXTS)}) in {folder}")
    return paths


def _decode(path: str, option: str) -> np.ndarray:
    """(h, w, 3) uint8 RGB at most MAX_SIDE px, or a DataError naming the file."""
    data = np.fromfile(path, np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_COLOR) if data.size else None
    if img is None:
        raise DataError(f"{option}: {path} is not a readable image (corrupt, empty or an unsupported format)")
    if min(img.shape[:2]) < MIN_SIDE:
        raise DataError(f"{option}: {path} is {img.shape[1]}x{img.shape[0]} px; photos need at least "
                        f"{MIN_SIDE} px per side")
    scale = MAX_SIDE / max(img.shape[:2])
    if scale < 1:
        img = cv2.resize(img, (round(img.shape[1] * scale), round(img.shape[0] * scale)),
                         interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


class PhotoPool:
    """The decoded photos of a folder, and random crops of them."""

    def __init__(self, folders: str | list[str], option: str = "--photos"):
        self.folders = [folders] if isinstance(folders, str) else list(folders)
        self.paths = [p for folder in self.folders for p in list_photos(folder, option)]
        self.images = [_decode(p, option) for p in self.paths]

    def __len__(self) -> int:
        return len(self.images)

    def crop(self, rng: np.random.Generator, width: int, height: int, min_frac: float = 0.3,
             jitter: float = 0.0) -> np.ndarray:
        """A random crop of one photo with the aspect width:height, resized to (height, width, 3) uint8.

        min_frac: the crop's side as a fraction of the largest that fits (lower zooms in further);
        jitter: strength of a random colour change (gain per channel, saturation), 0 = none.
        """
        img = self.images[int(rng.integers(len(self.images)))]
        h, w = img.shape[:2]
        aspect = width / height
        ch = min(h, w / aspect) * rng.uniform(min_frac, 1.0)
        cw = ch * aspect
        y0, x0 = rng.uniform(0, h - ch), rng.uniform(0, w - cw)
        crop = img[int(y0):int(y0 + ch), int(x0):int(x0 + cw)]
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        out = cv2.resize(crop, (width, height), interpolation=cv2.INTER_AREA if ch > height else cv2.INTER_LINEAR)
        if jitter > 0:
            f = out.astype(np.float32)
            grey = f.mean(2, keepdims=True)
            f = grey + (f - grey) * rng.uniform(1 - 0.5 * jitter, 1 + 0.5 * jitter)    # saturation
            f = f * rng.uniform(1 - 0.25 * jitter, 1 + 0.25 * jitter, 3)                # white balance / gain
            out = np.clip(f, 0, 255).astype(np.uint8)
        return out


def open_pool(folders: list[str] | None) -> PhotoPool | None:
    """The PhotoPool of a `--photos DIR [DIR ...]` option, or None when it was not given."""
    return PhotoPool([resolve_path(f) for f in folders]) if folders else None
