"""Fake camera files for Chromium (--use-file-for-fake-video-capture): .y4m I420 written in
Python, showing a generated card scene with a known mask and known corners inside the centred
3:4 crop (one card, several at given places, or none). The end-to-end tests and
demo/benchmark.py run the web app on them."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from common import IMAGE_HEIGHT, IMAGE_WIDTH
from synthetic import v1 as synthetic


@dataclass
class CameraTruth:
    frame: np.ndarray            # (H, W, 3) uint8 RGB, what the y4m file shows
    mask: np.ndarray             # (640, 480) uint8 0/1: the card(s) in model-input coordinates
    corners: np.ndarray | None   # (4, 2) TL, TR, BR, BL, pixel-index of the 480x640 model input
    frame_corners: np.ndarray | None   # (4, 2) the same corners, pixel-index of the full frame
    cards: list[np.ndarray] | None = None        # several cards: each (4, 2) as `corners`, bottom first
    frame_cards: list[np.ndarray] | None = None  # and in the full frame


def write_y4m(path: str, frames: list[np.ndarray], fps: int = 30) -> None:
    """frames: (H, W, 3) uint8 RGB, even sizes. 4:2:0 with a C420jpeg header, which Chromium reads."""
    h, w = frames[0].shape[:2]
    with open(path, "wb") as f:
        f.write(f"YUV4MPEG2 W{w} H{h} F{fps}:1 Ip A1:1 C420jpeg XYSCSS=420JPEG\n".encode())
        for rgb in frames:
            f.write(b"FRAME\n")
            f.write(cv2.cvtColor(rgb, cv2.COLOR_RGB2YUV_I420).tobytes())   # Y, then U, then V planes


def _card_at(rng: np.random.Generator, quad: np.ndarray) -> synthetic.Scene:
    """A generated card whose corners are `quad` ((4, 2) TL, TR, BR, BL, pixel-index of the
    480x640 scene) over a card-free scene."""
    return _cards_at(rng, [quad])


def _cards_at(rng: np.random.Generator, quads: list[np.ndarray]) -> synthetic.Scene:
    """Generated cards at `quads` (each (4, 2) TL, TR, BR, BL, pixel-index of the 480x640 scene),
    painted in order (a later card lies on an earlier one), over a card-free scene; the mask is the
    union of the cards, the corners those of the first."""
    image = synthetic.render_scene(rng, negative=True).image.astype(np.float32)
    cw, ch = synthetic.CARD_W, synthetic.CARD_H
    src = np.float32([[-0.5, -0.5], [cw - 0.5, -0.5], [cw - 0.5, ch - 0.5], [-0.5, ch - 0.5]])
    size = (IMAGE_WIDTH, IMAGE_HEIGHT)
    union = np.zeros(size[::-1], np.float32)
    for quad in quads:
        hom = cv2.getPerspectiveTransform(src, np.float32(quad))
        card = cv2.warpPerspective(synthetic.render_card(rng), hom, size, flags=cv2.INTER_LINEAR).astype(np.float32)
        alpha = cv2.warpPerspective(synthetic.rounded_rect_alpha(cw, ch, synthetic.CARD_RADIUS), hom, size,
                                    flags=cv2.INTER_LINEAR)[..., None]
        image = card * alpha + image * (1 - alpha)
        union = np.maximum(union, alpha[..., 0])
    image = np.clip(image, 0, 255).astype(np.uint8)
    return synthetic.Scene(image, ((union >= 0.5) * 255).astype(np.uint8), np.float64(quads[0]))


def card_frame(width: int, height: int, seed: int = 5, card: bool = True, quad=None, quads=None) -> CameraTruth:
    """A width x height landscape frame whose centred 3:4 crop is a card scene (or a scene without
    a card when card is False; a card at `quad`, or several at `quads`, pixel-index TL, TR, BR, BL of
    the 480x640 crop, when given)."""
    rng = np.random.default_rng(seed)
    if card and quads is not None:
        scene = _cards_at(rng, [np.asarray(q, np.float64) for q in quads])
    elif card and quad is not None:
        scene = _card_at(rng, np.asarray(quad, np.float64))
    else:
        scene = synthetic.render_scene(rng, negative=not card)
    while card and quad is None and quads is None and (
            scene.corners is None or not 0.2 * 255 <= scene.mask.mean() <= 0.5 * 255
            or scene.states is None or min(scene.states) != synthetic.VISIBLE):
        scene = synthetic.render_scene(rng)   # a clearly visible, fully framed card, no finger on a corner
    sh = height
    sw = round(height * 3 / 4)
    sx = (width - sw) // 2
    # The sides that the app crops away: a card-free scene.
    frame = cv2.resize(synthetic.render_scene(rng, negative=True).image, (width, height))
    frame[:, sx:sx + sw] = cv2.resize(scene.image, (sw, sh), interpolation=cv2.INTER_AREA)
    # The mask as the app's crop, rescaled to 480x640, should see it.
    mask = cv2.resize(cv2.resize(scene.mask, (sw, sh), interpolation=cv2.INTER_NEAREST),
                      (IMAGE_WIDTH, IMAGE_HEIGHT), interpolation=cv2.INTER_NEAREST)
    scale = np.array([sw / IMAGE_WIDTH, sh / IMAGE_HEIGHT])

    def to_frame(c: np.ndarray) -> np.ndarray:
        # Scaling the crop up and back down again maps continuous coordinates (index + 0.5) onto
        # themselves: the model-input corners are the scene's.
        return np.array([sx, 0.0]) + (c + 0.5) * scale - 0.5

    corners = frame_corners = cards = frame_cards = None
    if card:
        corners = scene.corners.astype(np.float64)
        frame_corners = to_frame(corners)
    if card and quads is not None:
        cards = [np.asarray(q, np.float64) for q in quads]
        frame_cards = [to_frame(c) for c in cards]
    return CameraTruth(frame, (mask >= 128).astype(np.uint8), corners, frame_corners, cards, frame_cards)


def make_camera_file(path: str, width: int, height: int, frames: int = 4, seed: int = 5,
                     card: bool = True, quad=None, quads=None) -> CameraTruth:
    truth = card_frame(width, height, seed, card, quad, quads)
    write_y4m(path, [truth.frame] * frames)
    return truth


# A moving card's frames carry their index as a row of black and white squares in the frame's left
# margin, which the app crops away: CODE_BITS squares of CODE_PX px at (CODE_X, CODE_Y).
CODE_BITS, CODE_PX, CODE_X, CODE_Y = 8, 16, 8, 8


def moving_card_file(path: str, width: int, height: int, speed_px_s: float, fps: int = 30, travel_px: float = 120,
                     seed: int = 5, quad=None) -> list[np.ndarray]:
    """A y4m of a card sliding left and right at speed_px_s (px of the 480x640 model input per second)
    over travel_px and back, one period looping; every frame's index coded in its left margin
    (read_frame_code). Returns the card's corners per frame, (4, 2) pixel-index of the model input."""
    quad = np.asarray(quad if quad is not None else [[140, 190], [340, 190], [340, 470], [140, 470]], np.float64)
    steps = max(2, round(travel_px / speed_px_s * fps))
    if 2 * steps > 2 ** CODE_BITS:
        raise ValueError(f"{speed_px_s} px/s over {travel_px} px: {2 * steps} frames a loop, more than the "
                         f"{2 ** CODE_BITS} a frame's code can number")
    shifts = np.concatenate([np.linspace(0, travel_px, steps, endpoint=False),
                             np.linspace(travel_px, 0, steps, endpoint=False)]) - travel_px / 2
    frames, corners = [], []
    for i, dx in enumerate(shifts):
        truth = card_frame(width, height, seed, quad=quad + [dx, 0])
        for b in range(CODE_BITS):
            x0 = CODE_X + b * CODE_PX
            truth.frame[CODE_Y:CODE_Y + CODE_PX, x0:x0 + CODE_PX] = 255 if (i >> b) & 1 else 0
        frames.append(truth.frame)
        corners.append(truth.corners)
    write_y4m(path, frames, fps)
    return corners


def read_frame_code(rgb: np.ndarray) -> int:
    """The frame index a moving_card_file frame carries, from its (H, W, 3) pixels."""
    y = CODE_Y + CODE_PX // 2
    return sum(1 << b for b in range(CODE_BITS) if rgb[y, CODE_X + b * CODE_PX + CODE_PX // 2].mean() > 127)
