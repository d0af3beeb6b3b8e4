"""Where the models look in a photo, and the card warped flat out of it.

A view is a region of the upright photo scaled into the 480x640 model input: the web app's centred
3:4 crop, the whole photo with black bars (letterbox), or one of the overlapping 3:4 tiles that
cover a photo of another shape at the crop's scale, so that cards anywhere in it keep their pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from common import IMAGE_HEIGHT, IMAGE_WIDTH, MASK_THRESHOLD

# A trading card is 63 x 88 mm: 10 px per mm by default.
DEFAULT_SCAN_SIZE = (630, 880)
# Letterbox bars are black: both models were trained with black fill where augmentation moved the
# frame (grey bars cost the detector accuracy; corners/trainer.py).
LETTERBOX_FILL = 0
# Neighbouring tiles share at least this share of a tile: a card narrower than that is whole in one.
MIN_TILE_OVERLAP = 0.25


@dataclass(frozen=True)
class Geometry:
    """Where the model input lies in the upright original, per axis, in continuous coordinates
    (an image of width W spans 0..W): model = original * scale + offset."""
    scale_x: float
    scale_y: float
    offset_x: float
    offset_y: float

    def to_original(self, points: np.ndarray) -> np.ndarray:
        """(N, 2) continuous model-input coordinates -> (N, 2) pixel-index coordinates of the original
        (the centre of the top-left pixel is (0, 0), as in corner_annotations.json)."""
        return (points - (self.offset_x, self.offset_y)) / (self.scale_x, self.scale_y) - 0.5

    def resized(self, kx: float, ky: float) -> Geometry:
        """The same model input seen from the original resized by (kx, ky)."""
        return Geometry(self.scale_x / kx, self.scale_y / ky, self.offset_x, self.offset_y)

    def index_affine(self) -> np.ndarray:
        """(2, 3) pixel-index original -> pixel-index model input (for cv2.warpAffine)."""
        return np.array([[self.scale_x, 0, 0.5 * self.scale_x + self.offset_x - 0.5],
                         [0, self.scale_y, 0.5 * self.scale_y + self.offset_y - 0.5]])

    def region(self, width: int, height: int) -> tuple[float, float, float, float]:
        """(x0, y0, x1, y1) of the original, continuous px, that the model input shows."""
        x0, y0 = -self.offset_x / self.scale_x, -self.offset_y / self.scale_y
        x1, y1 = (IMAGE_WIDTH - self.offset_x) / self.scale_x, (IMAGE_HEIGHT - self.offset_y) / self.scale_y
        return max(0.0, x0), max(0.0, y0), min(float(width), x1), min(float(height), y1)


def centred_crop(width: int, height: int) -> tuple[int, int, int, int]:
    """(x, y, w, h) of the largest centred 3:4 portrait region, in integer pixels: the web app's
    ImageUtils.centeredCrop34 (demo/js/image-utils.js), rounding halves up as Math.round does."""
    if width * IMAGE_HEIGHT >= height * IMAGE_WIDTH:            # wider than 3:4: keep the height
        h = height
        w = max(1, min(width, math.floor(height * IMAGE_WIDTH / IMAGE_HEIGHT + 0.5)))
    else:                                                       # taller: keep the width
        w = width
        h = max(1, min(height, math.floor(width * IMAGE_HEIGHT / IMAGE_WIDTH + 0.5)))
    return (width - w) // 2, (height - h) // 2, w, h


def tiles(width: int, height: int) -> list[tuple[int, int, int, int]]:
    """(x, y, w, h) of the 3:4 tiles, the centred crop's size, that cover the whole photo: along its
    long side, evenly spaced, neighbours sharing at least MIN_TILE_OVERLAP of a tile. One tile, the
    centred crop, when the photo is 3:4 (within a pixel)."""
    x, y, w, h = centred_crop(width, height)
    along, size = (width, w) if w < width else (height, h)
    step = size * (1 - MIN_TILE_OVERLAP)
    n = 1 if along - size <= 1 else math.ceil((along - size) / step) + 1
    starts = [round(i * (along - size) / (n - 1)) for i in range(n)] if n > 1 else [(along - size) // 2]
    return [(s, 0, w, h) if w < width else (0, s, w, h) for s in starts]


def _resize(image: np.ndarray, w: int, h: int) -> np.ndarray:
    shrink = w <= image.shape[1] and h <= image.shape[0]
    return cv2.resize(image, (w, h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)


def crop_view(image: np.ndarray, box: tuple[int, int, int, int]) -> tuple[np.ndarray, Geometry]:
    """(H, W, 3) upright original and a 3:4 box (x, y, w, h) -> (640, 480, 3) model input, Geometry."""
    x, y, w, h = box
    sx, sy = IMAGE_WIDTH / w, IMAGE_HEIGHT / h
    return _resize(image[y:y + h, x:x + w], IMAGE_WIDTH, IMAGE_HEIGHT), Geometry(sx, sy, -x * sx, -y * sy)


def letterbox_view(image: np.ndarray) -> tuple[np.ndarray, Geometry]:
    """The whole photo scaled into the model input, black bars around it."""
    height, width = image.shape[:2]
    s = min(IMAGE_WIDTH / width, IMAGE_HEIGHT / height)
    w = max(1, min(IMAGE_WIDTH, math.floor(width * s + 0.5)))
    h = max(1, min(IMAGE_HEIGHT, math.floor(height * s + 0.5)))
    x, y = (IMAGE_WIDTH - w) // 2, (IMAGE_HEIGHT - h) // 2
    out = np.full((IMAGE_HEIGHT, IMAGE_WIDTH, 3), LETTERBOX_FILL, np.uint8)
    out[y:y + h, x:x + w] = _resize(image, w, h)
    return out, Geometry(w / width, h / height, x, y)


def to_model_input(image: np.ndarray, letterbox: bool = False) -> tuple[np.ndarray, Geometry]:
    """(H, W, 3) uint8 upright original -> (640, 480, 3) uint8 model input and its Geometry: the
    centred 3:4 crop (the web app's), or with letterbox the whole photo with black bars."""
    if letterbox:
        return letterbox_view(image)
    return crop_view(image, centred_crop(image.shape[1], image.shape[0]))


def views(image: np.ndarray, mode: str) -> list[tuple[np.ndarray, Geometry]]:
    """The model inputs of one photo: mode "crop" (the centred crop), "letterbox" (the whole photo)
    or "tiles" (every tile, and the whole photo when there are several: a card larger than the
    tiles' overlap is whole there)."""
    if mode == "crop":
        return [to_model_input(image)]
    if mode == "letterbox":
        return [letterbox_view(image)]
    boxes = tiles(image.shape[1], image.shape[0])
    out = [crop_view(image, b) for b in boxes]
    return out + [letterbox_view(image)] if len(boxes) > 1 else out


def rectify(image: np.ndarray, corners: np.ndarray, size: tuple[int, int] = DEFAULT_SCAN_SIZE) -> np.ndarray:
    """The card warped flat: (size[1], size[0], 3) from the full-resolution image and its corners
    (4, 2) TL, TR, BR, BL in pixel-index coordinates; the corners land on the output's corners.

    A card lying sideways (its top and bottom edges longer than its sides) is turned a quarter
    turn to stay portrait: the corner at the photo's bottom left becomes the flat card's top left,
    as in the web app (demo/js/geometry.js, portraitOrder). Which way up a card lies is not known
    (its corners are ordered by their place in the photo), so such a card, like one upside down
    in the photo, may come out upside down. A card much larger than the output is first shrunk
    with area averaging, since the bilinear warp alone would alias fine print.
    """
    w, h = size
    quad = np.asarray(corners, np.float64)
    edge = np.linalg.norm(quad - np.roll(quad, -1, axis=0), axis=1)      # top, right, bottom, left
    if edge[0] + edge[2] > edge[1] + edge[3]:
        quad = np.roll(quad, 1, axis=0)                                   # BL, TL, TR, BR
        edge = np.roll(edge, 1)
    # Only the card's bounding box (plus a pixel of margin) is worked on.
    lo = np.clip(np.floor(quad.min(0)) - 1, 0, (image.shape[1], image.shape[0])).astype(int)
    hi = np.clip(np.ceil(quad.max(0)) + 2, 0, (image.shape[1], image.shape[0])).astype(int)
    if np.all(hi > lo):
        image, quad = image[lo[1]:hi[1], lo[0]:hi[0]], quad - lo
    ratio = min((edge[0] + edge[2]) / (2 * w), (edge[1] + edge[3]) / (2 * h))   # source px per output px
    if ratio > 2:
        sw, sh = max(1, round(image.shape[1] * 1.5 / ratio)), max(1, round(image.shape[0] * 1.5 / ratio))
        k = np.array([sw / image.shape[1], sh / image.shape[0]])
        image, quad = cv2.resize(image, (sw, sh), interpolation=cv2.INTER_AREA), (quad + 0.5) * k - 0.5
    # The output's outer pixel edges, in pixel-index coordinates.
    dst = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]])
    m = cv2.getPerspectiveTransform(quad.astype(np.float32), dst.astype(np.float32))
    return cv2.warpPerspective(image, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                               borderValue=(0, 0, 0))


def prob_in_original(prob: np.ndarray, geometry: Geometry, width: int, height: int) -> np.ndarray:
    """(640, 480) card probability -> (height, width) float32 in the original's pixels (0 where the
    model input did not reach)."""
    return cv2.warpAffine(prob, geometry.index_affine(), (width, height),
                          flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


def mask_in_original(prob: np.ndarray, geometry: Geometry, width: int, height: int) -> np.ndarray:
    """(640, 480) card probability -> (height, width) uint8 0/255 in the original's pixels (zero where
    the model input did not reach)."""
    return np.where(prob_in_original(prob, geometry, width, height) >= MASK_THRESHOLD, 255, 0).astype(np.uint8)
