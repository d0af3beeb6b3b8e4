"""Procedural trading-card scenes: the renderer behind generate_dataset.py.

A scene is a card (MTG-like layout, 63 x 88 mm, rounded corners) posed in 3-D in front of a
pinhole camera over a procedural or user-supplied background, then degraded like a phone or
webcam frame. ``render_scene`` returns the 480x640 RGB image, the 0/255 card mask and the four
true corners (where the straight edges meet, so just outside the rounded mask).
"""

from __future__ import annotations

import math
import string
from dataclasses import dataclass

import cv2
import numpy as np

from common import IMAGE_HEIGHT, IMAGE_WIDTH, order_corners

# Card raster in card pixels: 5:7 like a 63 x 88 mm card (320 / 448 = 0.714 ~ 63 / 88 = 0.716).
CARD_W = 320
CARD_H = 448
# Corner radius 3 mm of 63 mm width.
CARD_RADIUS = CARD_W * 3.0 / 63.0

NEGATIVE_FRACTION = 0.07      # the real dataset has ~9 % negatives
OUTSIDE_FRACTION = 0.06       # cards partly outside the frame
ANY_ANGLE_FRACTION = 0.05     # in-plane rotation beyond the hand-held +-35 deg
FINGER_FRACTION = 0.25
MIN_AREA, MAX_AREA = 0.15, 0.80   # card area as a fraction of the frame

# Frame colours of the five colours, gold, artifact and land (RGB).
FRAME_COLOURS = [
    (232, 226, 200), (40, 110, 180), (70, 66, 64), (190, 60, 40), (50, 130, 70),
    (200, 170, 80), (150, 150, 160), (140, 110, 80),
]
SKIN_TONES = [(233, 192, 168), (210, 160, 130), (170, 120, 90), (120, 80, 60), (245, 210, 190)]
FONTS = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
         cv2.FONT_HERSHEY_TRIPLEX]


# Corner states of the side file corner_visibility.json (never inside corner_annotations.json,
# whose format is the users').
OUTSIDE, HIDDEN, VISIBLE = 0, 1, 2


@dataclass
class Scene:
    image: np.ndarray          # (640, 480, 3) uint8 RGB
    mask: np.ndarray           # (640, 480) uint8, 255 = card
    corners: np.ndarray | None  # (4, 2) float, clockwise from smallest x + y; None = negative
    states: list[int] | None = None   # per corner: OUTSIDE, HIDDEN (under an occluder) or VISIBLE


def corner_states(corners: np.ndarray, occluder: np.ndarray | None) -> list[int]:
    """OUTSIDE / HIDDEN / VISIBLE for each (x, y) corner; occluder is the (H, W) float alpha of what
    lies in front of the card (fingers), None when nothing does."""
    h, w = IMAGE_HEIGHT, IMAGE_WIDTH
    states = []
    for x, y in corners:
        if not (-0.5 <= x < w - 0.5 and -0.5 <= y < h - 0.5):
            states.append(OUTSIDE)
        elif occluder is not None and occluder[int(round(y)), int(round(x))] >= 0.5:
            states.append(HIDDEN)
        else:
            states.append(VISIBLE)
    return states


# ----------------------------------------------------------------------------- helpers

def _colour(rng: np.random.Generator, base, jitter: float = 25.0) -> tuple[int, int, int]:
    c = np.asarray(base, np.float32) + rng.normal(0, jitter, 3)
    return tuple(int(v) for v in np.clip(c, 0, 255))


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    return tuple(int(v) for v in rng.integers(0, 256, 3))


def _smooth_noise(rng: np.random.Generator, h: int, w: int, cells: int, channels: int = 1) -> np.ndarray:
    """Value noise in [0, 1]: a cells x cells random grid upsampled bicubically to (h, w)."""
    gh = max(2, int(cells * h / max(h, w)) + 1)
    gw = max(2, int(cells * w / max(h, w)) + 1)
    grid = rng.random((gh, gw, channels), dtype=np.float32)
    out = cv2.resize(grid, (w, h), interpolation=cv2.INTER_CUBIC)
    if out.ndim == 2:
        out = out[..., None]
    return np.clip(out, 0, 1)


def _random_text(rng: np.random.Generator, n_min: int, n_max: int) -> str:
    words = []
    for _ in range(int(rng.integers(1, 4))):
        n = int(rng.integers(n_min, n_max + 1))
        words.append("".join(rng.choice(list(string.ascii_lowercase), n)))
    text = " ".join(words)
    return text[:1].upper() + text[1:]


def _put_text(img, rng, text, org, scale, colour, thickness=1):
    cv2.putText(img, text, org, FONTS[int(rng.integers(len(FONTS)))], scale, colour, thickness,
                cv2.LINE_AA)


def rounded_rect_alpha(w: int, h: int, radius: float, supersample: int = 4) -> np.ndarray:
    """Anti-aliased alpha (h, w) float32 in [0, 1] of a rectangle with rounded corners."""
    s = supersample
    big = np.zeros((h * s, w * s), np.uint8)
    r = int(round(radius * s))
    cv2.rectangle(big, (r, 0), (w * s - 1 - r, h * s - 1), 255, -1)
    cv2.rectangle(big, (0, r), (w * s - 1, h * s - 1 - r), 255, -1)
    for cx, cy in ((r, r), (w * s - 1 - r, r), (r, h * s - 1 - r), (w * s - 1 - r, h * s - 1 - r)):
        cv2.circle(big, (cx, cy), r, 255, -1)
    return cv2.resize(big, (w, h), interpolation=cv2.INTER_AREA).astype(np.float32) / 255.0


_CARD_ALPHA = rounded_rect_alpha(CARD_W, CARD_H, CARD_RADIUS)


# ----------------------------------------------------------------------------- the card

def _art(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Painterly fake artwork: a sky-to-ground gradient, noise and a few blurred shapes."""
    top, bottom = np.array(_random_colour(rng), np.float32), np.array(_random_colour(rng), np.float32)
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    art = top * (1 - t) + bottom * t
    art = art * (0.6 + 0.8 * _smooth_noise(rng, h, w, int(rng.integers(3, 10)), 3))
    art = np.clip(art, 0, 255).astype(np.uint8)
    for _ in range(int(rng.integers(2, 8))):
        c = _random_colour(rng)
        kind = rng.integers(3)
        if kind == 0:
            cv2.circle(art, (int(rng.integers(w)), int(rng.integers(h))), int(rng.integers(5, max(6, w // 3))), c, -1,
                       cv2.LINE_AA)
        elif kind == 1:
            pts = rng.integers(0, [w, h], (int(rng.integers(3, 7)), 2)).astype(np.int32)
            cv2.fillPoly(art, [pts], c, cv2.LINE_AA)
        else:
            cv2.ellipse(art, (int(rng.integers(w)), int(rng.integers(h))),
                        (int(rng.integers(5, w // 2)), int(rng.integers(5, h // 2))), float(rng.uniform(0, 180)),
                        0, 360, c, -1, cv2.LINE_AA)
    k = int(rng.integers(0, 3)) * 2 + 1
    return cv2.GaussianBlur(art, (k, k), 0) if k > 1 else art


def render_card(rng: np.random.Generator) -> np.ndarray:
    """One card face, (CARD_H, CARD_W, 3) uint8 RGB, MTG-like layout."""
    w, h = CARD_W, CARD_H
    r = rng.random()
    border = (15, 15, 15) if r < 0.6 else (235, 235, 230) if r < 0.75 else \
        _colour(rng, (190, 180, 150)) if r < 0.85 else _random_colour(rng)
    card = np.empty((h, w, 3), np.uint8)
    card[:] = border
    bw = int(w * rng.uniform(0.035, 0.055))
    frame = _colour(rng, FRAME_COLOURS[int(rng.integers(len(FRAME_COLOURS)))])
    inner = card[bw:h - bw, bw:w - bw]
    ih, iw = inner.shape[:2]
    tex = 0.85 + 0.3 * _smooth_noise(rng, ih, iw, int(rng.integers(4, 20)))
    inner[:] = np.clip(np.asarray(frame, np.float32) * tex, 0, 255).astype(np.uint8)

    full_art = rng.random() < 0.2
    m = int(iw * 0.035)
    light = tuple(int(min(255, v * 0.5 + 130)) for v in frame)
    dark_text = (10, 10, 10) if sum(light) > 380 else (240, 240, 240)
    if full_art:
        inner[:] = _art(rng, ih, iw)
    else:
        art_top, art_bottom = int(ih * 0.11), int(ih * 0.56)
        inner[art_top:art_bottom, m:iw - m] = _art(rng, art_bottom - art_top, iw - 2 * m)
        cv2.rectangle(inner, (m, art_top), (iw - m - 1, art_bottom - 1), (20, 20, 20), 1)
    # Title bar, type line and text box; semi-opaque on full-art cards.
    overlay = inner.copy()
    title = (m, int(ih * 0.02), iw - m, int(ih * 0.095))
    typeline = (m, int(ih * 0.57), iw - m, int(ih * 0.635))
    textbox = (m + 3, int(ih * 0.645), iw - m - 3, int(ih * 0.93))
    for x0, y0, x1, y1 in (title, typeline):
        cv2.rectangle(overlay, (x0, y0), (x1, y1), light, -1, cv2.LINE_AA)
        cv2.rectangle(overlay, (x0, y0), (x1, y1), (30, 30, 30), 1, cv2.LINE_AA)
    parchment = _colour(rng, (225, 215, 190), 15)
    cv2.rectangle(overlay, textbox[:2], textbox[2:], parchment, -1)
    alpha = 0.55 if full_art else 1.0
    cv2.addWeighted(overlay, alpha, inner, 1 - alpha, 0, dst=inner)

    _put_text(inner, rng, _random_text(rng, 3, 7)[:14], (title[0] + 5, title[3] - 8), 0.5, dark_text)
    for k in range(int(rng.integers(0, 5))):   # mana symbols
        cx = title[2] - 10 - k * 15
        cv2.circle(inner, (cx, (title[1] + title[3]) // 2), 6, _random_colour(rng), -1, cv2.LINE_AA)
    _put_text(inner, rng, _random_text(rng, 4, 8)[:16], (typeline[0] + 5, typeline[3] - 7), 0.42, dark_text)
    cv2.circle(inner, (typeline[2] - 12, (typeline[1] + typeline[3]) // 2), 6, _random_colour(rng), -1, cv2.LINE_AA)
    y = textbox[1] + 16
    while y < textbox[3] - 6 and rng.random() < 0.92:
        _put_text(inner, rng, _random_text(rng, 2, 6)[:22], (textbox[0] + 6, y), 0.36, (20, 20, 20))
        y += int(rng.integers(13, 19))
    if rng.random() < 0.5:   # power / toughness box
        px0, py0 = iw - m - 50, int(ih * 0.905)
        cv2.rectangle(inner, (px0, py0), (iw - m, py0 + 24), light, -1, cv2.LINE_AA)
        _put_text(inner, rng, f"{rng.integers(0, 10)}/{rng.integers(0, 10)}", (px0 + 10, py0 + 18), 0.5, dark_text)
    info = (200, 200, 200) if sum(border) < 300 else (30, 30, 30)
    _put_text(card, rng, _random_text(rng, 3, 6)[:20], (bw + 4, h - bw // 2 + 2), 0.25, info)
    return card


# ----------------------------------------------------------------------------- the scene

def _background(rng: np.random.Generator, user_backgrounds: list[str]) -> np.ndarray:
    h, w = IMAGE_HEIGHT, IMAGE_WIDTH
    if user_backgrounds and rng.random() < 0.5:
        bg = _user_background(rng, user_backgrounds)
        if bg is not None:
            return bg
    kind = rng.integers(4)
    base = np.array(_random_colour(rng), np.float32)
    if rng.random() < 0.6:   # most real tables and walls are muted, not saturated
        base = base * 0.4 + base.mean() * 0.6
    yy, xx = np.arange(h, dtype=np.float32)[:, None], np.arange(w, dtype=np.float32)[None, :]
    if kind == 0:       # smooth texture (table, wall, fabric seen out of focus)
        n = _smooth_noise(rng, h, w, int(rng.integers(2, 30)), 3)
        bg = base * (0.5 + n)
    elif kind == 1:     # wood grain
        ang = rng.uniform(0, math.pi)
        u = xx * math.cos(ang) + yy * math.sin(ang)
        warp = _smooth_noise(rng, h, w, 6)[..., 0] * rng.uniform(20, 80)
        grain = 0.5 + 0.5 * np.sin((u + warp) * rng.uniform(0.05, 0.3))
        bg = base * (0.7 + 0.4 * grain[..., None])
    elif kind == 2:     # stripes / checks (tablecloth, playmat pattern)
        p = rng.uniform(8, 60)
        pat = ((xx // p).astype(int) + (yy // p).astype(int) * int(rng.integers(0, 2))) % 2
        other = np.array(_random_colour(rng), np.float32)
        bg = np.where(pat[..., None] == 1, base, other)
        bg = cv2.GaussianBlur(bg, (0, 0), rng.uniform(0.5, 2.0))
    else:               # plain surface with sensor-like grain
        bg = base * (0.9 + 0.2 * _smooth_noise(rng, h, w, 4, 1))
    if rng.random() < 0.3:   # grain of the surface itself (the camera adds its own noise later)
        bg = bg + rng.standard_normal((h, w, 1), dtype=np.float32) * rng.uniform(0, 12)
    return np.clip(bg, 0, 255).astype(np.uint8)


def _user_background(rng: np.random.Generator, paths: list[str]) -> np.ndarray | None:
    path = paths[int(rng.integers(len(paths)))]
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    if img is None or min(img.shape[:2]) < 32:
        return None
    img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    h, w = img.shape[:2]
    # Random crop of aspect 3:4 covering 50-100 % of the shorter fitting side.
    ch = int(min(h, w * 4 / 3) * rng.uniform(0.5, 1.0))
    cw = int(ch * 3 / 4)
    y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
    crop = img[y0:y0 + ch, x0:x0 + cw]
    if rng.random() < 0.5:
        crop = crop[:, ::-1]
    return cv2.resize(crop, (IMAGE_WIDTH, IMAGE_HEIGHT), interpolation=cv2.INTER_AREA)


def _clutter(rng: np.random.Generator, img: np.ndarray) -> None:
    """Distractors on the table: sheets of paper, notes, books, a mug, a cable."""
    h, w = img.shape[:2]
    for _ in range(int(rng.integers(0, 5))):
        kind = rng.integers(4)
        c = _random_colour(rng) if rng.random() < 0.5 else _colour(rng, (240, 240, 235), 10)
        if kind <= 1:   # rotated rectangle of an aspect unlike a card's
            rw = rng.uniform(60, 400)
            ar = rng.choice([rng.uniform(0.2, 0.55), rng.uniform(0.9, 1.1), rng.uniform(1.6, 4.0)])
            box = cv2.boxPoints(((float(rng.uniform(0, w)), float(rng.uniform(0, h))), (rw, rw * ar),
                                 float(rng.uniform(0, 180)))).astype(np.int32)
            cv2.fillPoly(img, [box], c, cv2.LINE_AA)
            if kind == 1:   # printed lines on the paper
                x0, y0 = box.min(0)
                for k in range(int(rng.integers(2, 8))):
                    yy = int(y0 + 10 + k * 12)
                    cv2.line(img, (int(x0 + 8), yy), (int(x0 + rng.uniform(20, 120)), yy), (60, 60, 60), 1)
        elif kind == 2:
            cv2.circle(img, (int(rng.uniform(0, w)), int(rng.uniform(0, h))), int(rng.uniform(20, 90)), c, -1,
                       cv2.LINE_AA)
        else:
            pts = np.cumsum(rng.normal(0, 40, (8, 2)), 0) + rng.uniform(0, [w, h])
            cv2.polylines(img, [pts.astype(np.int32)], False, c, int(rng.integers(2, 8)), cv2.LINE_AA)


def _rotation(ax: float, ay: float, az: float) -> np.ndarray:
    cx, sx, cy, sy, cz, sz = math.cos(ax), math.sin(ax), math.cos(ay), math.sin(ay), math.cos(az), math.sin(az)
    rx = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
    ry = np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    rz = np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    return rz @ rx @ ry


def _pose_corners(rng: np.random.Generator, min_area: float = MIN_AREA, max_area: float = MAX_AREA,
                  outside_fraction: float = OUTSIDE_FRACTION) -> np.ndarray:
    """Project the card outline through a random 3-D pose; returns (4, 2) frame pixels.

    The card covers min_area..max_area of the frame; with probability outside_fraction part of it
    leaves the frame (its corners then lie outside the image)."""
    tilt = rng.uniform(-180, 180) if rng.random() < ANY_ANGLE_FRACTION else \
        float(np.clip(rng.normal(0, 12), -35, 35))
    ax, ay = np.radians(rng.uniform(-15, 15, 2))
    rot = _rotation(ax, ay, math.radians(tilt))
    # Card-centred 3-D outline in card pixels, z = 0 plane.
    half = np.array([CARD_W / 2, CARD_H / 2])
    outline = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]]) * half
    pts3 = np.c_[outline, np.zeros(4)] @ rot.T
    focal = rng.uniform(1.0, 2.0) * CARD_H      # wide to normal phone lenses
    depth = pts3[:, 2] + focal * 1.6
    proj = focal * pts3[:, :2] / depth[:, None]
    # Scale to the requested area and place it in the frame.
    area = 0.5 * abs(np.dot(proj[:, 0], np.roll(proj[:, 1], 1)) - np.dot(proj[:, 1], np.roll(proj[:, 0], 1)))
    target = rng.uniform(min_area, max_area) * IMAGE_WIDTH * IMAGE_HEIGHT
    scale = math.sqrt(target / area)
    proj = proj - proj.mean(0)
    span = proj.max(0) - proj.min(0)
    outside = rng.random() < outside_fraction
    fit = min((IMAGE_WIDTH - 4) / span[0], (IMAGE_HEIGHT - 4) / span[1])
    if not outside and scale > fit:
        scale = fit * rng.uniform(0.92, 1.0)
    proj = proj * scale
    lo, hi = -proj.min(0), np.array([IMAGE_WIDTH, IMAGE_HEIGHT]) - proj.max(0)
    if outside:   # push the centre so that 10-35 % of the card width leaves the frame
        centre = rng.uniform(lo, np.maximum(lo, hi))
        axis = int(rng.integers(2))
        sign = rng.choice([-1, 1])
        push = rng.uniform(0.1, 0.35) * (proj[:, axis].max() - proj[:, axis].min())
        centre[axis] = (lo[axis] - push) if sign < 0 else (hi[axis] + push)
    else:
        centre = rng.uniform(np.minimum(lo, hi), np.maximum(lo, hi))
    return proj + centre - 0.5   # pixel-centre convention, like cv2.warpPerspective


def _finger(rng, corners: np.ndarray, h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """A finger crossing the middle of one card edge: (alpha (h, w) float32, colour image)."""
    k = int(rng.integers(4))
    p0, p1 = corners[k], corners[(k + 1) % 4]
    centre = corners.mean(0)
    edge_pt = p0 + (p1 - p0) * rng.uniform(0.3, 0.7)
    out = edge_pt - centre
    out /= np.linalg.norm(out) + 1e-6
    ang = math.radians(rng.uniform(-30, 30))
    out = np.array([out[0] * math.cos(ang) - out[1] * math.sin(ang), out[0] * math.sin(ang) + out[1] * math.cos(ang)])
    card_w = np.linalg.norm(corners[1] - corners[0])
    width = max(8.0, card_w * rng.uniform(0.12, 0.2))
    tip = edge_pt - out * card_w * rng.uniform(0.04, 0.15)
    base = tip + out * 1000
    alpha = np.zeros((h, w), np.uint8)
    cv2.line(alpha, tuple(int(v) for v in tip), tuple(int(v) for v in base), 255, int(width), cv2.LINE_AA)
    skin = np.array(_colour(rng, SKIN_TONES[int(rng.integers(len(SKIN_TONES)))], 12), np.float32)
    shade = 0.75 + 0.35 * _smooth_noise(rng, h, w, 6)
    colour = np.clip(skin * shade, 0, 255)
    nail = tip + out * width * 0.45
    cv2.ellipse(colour, (tuple(int(v) for v in nail)), (int(width * 0.3), int(width * 0.35)), 0, 0, 360,
                tuple(float(min(255, v + 25)) for v in skin), -1, cv2.LINE_AA)
    return alpha.astype(np.float32) / 255.0, colour


def _lighting(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Uneven light, a soft shadow, a colour cast (img float32 RGB)."""
    h, w = img.shape[:2]
    # The light field is smooth: compute it at 1/8 resolution and upsample (cheap).
    sh, sw = h // 8, w // 8
    yy = np.linspace(0, h, sh, dtype=np.float32)[:, None]
    xx = np.linspace(0, w, sw, dtype=np.float32)[None, :]
    ang = rng.uniform(0, 2 * math.pi)
    g = (xx * math.cos(ang) + yy * math.sin(ang)) / max(h, w)
    light = rng.uniform(0.6, 1.0) + rng.uniform(0, 0.5) * (g - g.min())
    vig = rng.uniform(0, 0.35)
    light = light * (1 - vig * (((xx - w / 2) / w) ** 2 + ((yy - h / 2) / h) ** 2) * 2)
    if rng.random() < 0.5:   # soft shadow from a hand or phone
        shadow = np.zeros((sh, sw), np.float32)
        pts = rng.uniform(0, [sw, sh], (int(rng.integers(3, 6)), 2)).astype(np.int32)
        cv2.fillPoly(shadow, [pts], 1.0)
        shadow = cv2.GaussianBlur(shadow, (0, 0), rng.uniform(1, 4))
        light = light * (1 - rng.uniform(0.2, 0.55) * shadow)
    light = cv2.resize(light.astype(np.float32), (w, h), interpolation=cv2.INTER_LINEAR)
    cast = rng.uniform(0.85, 1.15, 3).astype(np.float32)
    return img * light[..., None] * cast


def _glare(rng, img: np.ndarray, corners: np.ndarray) -> None:
    h, w = img.shape[:2]
    c = corners.mean(0) + rng.normal(0, 40, 2)
    g = np.zeros((h // 4, w // 4), np.float32)
    cv2.ellipse(g, (int(c[0] / 4), int(c[1] / 4)), (int(rng.uniform(5, 30)), int(rng.uniform(3, 15))),
                float(rng.uniform(0, 180)), 0, 360, 1.0, -1)
    g = cv2.resize(cv2.GaussianBlur(g, (0, 0), rng.uniform(2, 6)), (w, h))
    img += (rng.uniform(80, 220) * g)[..., None]


def _camera(rng: np.random.Generator, img: np.ndarray) -> np.ndarray:
    """Defocus or motion blur, sensor noise, JPEG compression; float32 in, uint8 out."""
    r = rng.random()
    if r < 0.35:
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(0.5, 2.2))
    elif r < 0.55:
        k = int(rng.integers(3, 12))
        kernel = np.zeros((k, k), np.float32)
        kernel[k // 2, :] = 1.0 / k
        rot = cv2.getRotationMatrix2D((k / 2 - 0.5, k / 2 - 0.5), float(rng.uniform(0, 180)), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (k, k))
        img = cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6))
    sigma = rng.uniform(0, 10)
    if sigma > 1:   # luminance noise per pixel, chroma noise in 2x2 blocks like a Bayer sensor
        h, w = img.shape[:2]
        chroma = rng.standard_normal((h // 2, w // 2, 3), dtype=np.float32) * (sigma * 0.4)
        img = img + rng.standard_normal((h, w, 1), dtype=np.float32) * sigma \
            + cv2.resize(chroma, (w, h), interpolation=cv2.INTER_NEAREST)
    out = np.clip(img, 0, 255).astype(np.uint8)
    if rng.random() < 0.6:
        ok, buf = cv2.imencode(".jpg", out, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(45, 92))])
        out = cv2.imdecode(buf, cv2.IMREAD_UNCHANGED)
    return out


def render_scene(rng: np.random.Generator, negative: bool = False,
                 user_backgrounds: list[str] | None = None) -> Scene:
    """One 480x640 frame: RGB image, 0/255 mask and ordered corners (None for a negative)."""
    h, w = IMAGE_HEIGHT, IMAGE_WIDTH
    bg = _background(rng, user_backgrounds or [])
    _clutter(rng, bg)
    img = bg.astype(np.float32)
    mask = np.zeros((h, w), np.uint8)
    corners = None
    if not negative:
        card = render_card(rng)
        quad = _pose_corners(rng)
        src = np.array([[-0.5, -0.5], [CARD_W - 0.5, -0.5], [CARD_W - 0.5, CARD_H - 0.5], [-0.5, CARD_H - 0.5]],
                       np.float32)
        hom = cv2.getPerspectiveTransform(src, quad.astype(np.float32))
        warped = cv2.warpPerspective(card, hom, (w, h), flags=cv2.INTER_LINEAR).astype(np.float32)
        alpha = cv2.warpPerspective(_CARD_ALPHA, hom, (w, h), flags=cv2.INTER_LINEAR)
        if rng.random() < 0.5:   # the card's own drop shadow on the table
            sh = cv2.GaussianBlur(alpha, (0, 0), rng.uniform(2, 8))
            shift = np.float32([[1, 0, rng.integers(-8, 9)], [0, 1, rng.integers(-8, 9)]])
            sh = cv2.warpAffine(sh, shift, (w, h))   # zero border: no shadow wrapping round the frame
            img *= (1 - rng.uniform(0.2, 0.5) * sh)[..., None]
        img = cv2.blendLinear(warped, img, alpha, 1.0 - alpha)
        visible = alpha >= 0.5
        f_alpha = None
        if rng.random() < FINGER_FRACTION:
            f_alpha, f_colour = _finger(rng, quad, h, w)
            img = cv2.blendLinear(f_colour.astype(np.float32), img, f_alpha, 1.0 - f_alpha)
            visible &= f_alpha < 0.5    # the occluding finger is not card
        mask[visible] = 255
        if rng.random() < 0.3:
            _glare(rng, img, quad)
        corners = order_corners(quad)
        states = corner_states(corners, f_alpha)
    img = _lighting(rng, img)
    return Scene(_camera(rng, img), mask, corners, None if negative else states)
