"""Fake camera files for Chromium (--use-file-for-fake-video-capture): .y4m I420 written in
Python, showing a generated card scene with a known mask inside the centred 3:4 crop."""

from __future__ import annotations

import cv2
import numpy as np

import synthetic
from common import IMAGE_HEIGHT, IMAGE_WIDTH


def write_y4m(path: str, frames: list[np.ndarray], fps: int = 30) -> None:
    """frames: (H, W, 3) uint8 RGB, even sizes. 4:2:0 with a C420jpeg header, which Chromium reads."""
    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg XYSCSS=420JPEG\n".encode())
        for rgb in frames:
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes())   # Y, then U, then V planes


def card_frame(width: int, height: int, seed: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """A width x height landscape frame whose centred 3:4 crop is a card scene.

    Returns (frame RGB, mask (640, 480) of the card in model-input coordinates).
    """
    rng = np.random.default_rng(seed)
    scene = synthetic.render_scene(rng)
    while scene.corners is None or scene.mask.mean() < 0.2 * 255 or scene.mask.mean() > 0.5 * 255:
        scene = synthetic.render_scene(rng)   # a clearly visible, fully framed card
    sh = height
    sw = round(height * 3 / 4)
    sx = (width - sw) // 2
    # The sides that the app crops away: a card-free scene.
    frame = cv2.resize(synthetic.render_scene(rng, negative=True).image, (width, height))
    frame[:, sx:sx + sw] = cv2.resize(scene.image, (sw, sh), interpolation=cv2.INTER_AREA)
    # The mask as the app's crop, rescaled to 480x640, should see it.
    mask = cv2.resize(cv2.resize(scene.mask, (sw, sh), interpolation=cv2.INTER_NEAREST),
                      (IMAGE_WIDTH, IMAGE_HEIGHT), interpolation=cv2.INTER_NEAREST)
    return frame, (mask >= 128).astype(np.uint8)


def make_camera_file(path: str, width: int, height: int, frames: int = 4, seed: int = 5) -> np.ndarray:
    frame, mask = card_frame(width, height, seed)
    write_y4m(path, [frame] * frames)
    return mask
