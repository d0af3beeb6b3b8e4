"""Generator v2: scenes closer to a hand-held phone photo than synthetic.py's v1 look.

What v2 adds, each aimed at a failure seen on images our v1 renderer did not make:
- hands: a thumb over a corner, fingers across an edge, a hand entering from the frame border,
  fingers behind the card showing around it; skin tones, cylinder shading, nails. The corners in
  the JSON stay the true geometric corners; the mask excludes the fingers in front of the card;
- photographic content (`--photos DIR`) for backgrounds and card art;
- card designs: black, white, silver and gold borders, borderless and full-art frames, the card
  back, foil sheen, denser text blocks and symbols;
- rooms and desks: long straight edges (table edges, shelves, door and window frames, books,
  keyboards, phones), regions of the card's own border colour touching it, depth-of-field blur;
- light: glare bands across the card, low light with noise, over-exposure, white-balance casts;
- the card covers 10-90 % of the frame, and about 10 % of cards are partly out of the frame.

A Preset holds the probabilities; HARD concentrates the failure modes for an evaluation split.
Rendering reuses v1's lighting and camera stages, so v1 (synthetic.render_scene) is unchanged.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

from common import IMAGE_HEIGHT, IMAGE_WIDTH
from synthetic.photos import PhotoPool
from synthetic.v1 import (
    _CARD_ALPHA,
    CARD_H,
    CARD_W,
    FRAME_COLOURS,
    Scene,
    _art,
    _camera,
    _clutter,
    _colour,
    _lighting,
    _pose_corners,
    _put_text,
    _random_colour,
    _random_text,
    _smooth_noise,
    corner_states,
    order_corners,
)

SKIN_TONES = [(255, 224, 196), (241, 194, 160), (224, 172, 135), (198, 134, 96), (160, 104, 70),
              (120, 78, 52), (88, 57, 40)]
BORDERS = {"black": (14, 14, 14), "white": (238, 238, 232), "silver": (180, 182, 186), "gold": (196, 164, 92)}
CARD_BACK_BROWN = (72, 46, 28)


@dataclass(frozen=True)
class Preset:
    """Probabilities of each v2 feature per image (a card scene unless said otherwise)."""
    negative: float = 0.08            # no card (the users' data has ~9 %)
    min_area: float = 0.10            # card area as a fraction of the frame
    max_area: float = 0.90
    outside: float = 0.10             # card partly out of the frame
    thumb_corner: float = 0.20        # a thumb over one corner
    edge_fingers: float = 0.15        # fingers across an edge
    border_hand: float = 0.10         # a hand entering from the frame border
    behind_fingers: float = 0.20      # fingers behind the card, showing around it
    photo_background: float = 0.5     # with --photos
    photo_art: float = 0.5            # with --photos
    structured: float = 0.5           # room / desk structure (when the background is not a photo)
    touching_region: float = 0.2      # a region of the card's border colour touching the card
    dark_border_dark_scene: float = 0.1   # a black-bordered card on a dark background
    card_back: float = 0.07
    foil: float = 0.15
    background_blur: float = 0.25     # depth of field
    glare_band: float = 0.25
    low_light: float = 0.12
    over_exposure: float = 0.08
    strong_cast: float = 0.2
    multi: float = 0.25               # card frames showing several cards (synthetic/multi.py)
    touching: float = 0.35            # rows and grids of several cards without gaps


V2 = Preset()
# The hard evaluation split: corner fingers, structured backgrounds, dark borders on dark scenes and
# out-of-frame cards in far larger shares than in training data.
HARD = Preset(negative=0.05, outside=0.3, thumb_corner=0.6, edge_fingers=0.25, border_hand=0.2, behind_fingers=0.3,
              structured=0.85, touching_region=0.4, dark_border_dark_scene=0.3, card_back=0.1, glare_band=0.35,
              low_light=0.2, over_exposure=0.12, multi=0.3, touching=0.5)
PRESETS = {"v2": V2, "hard": HARD}


# ----------------------------------------------------------------------------- the card

def render_card_v2(rng: np.random.Generator, preset: Preset, photos: PhotoPool | None,
                   border: tuple[int, int, int] | None = None) -> np.ndarray:
    """One card face (CARD_H, CARD_W, 3) uint8 RGB: a frame style, art, text blocks, symbols."""
    if rng.random() < preset.card_back:
        return _card_back(rng)
    w, h = CARD_W, CARD_H
    style = rng.choice(["bordered", "bordered", "bordered", "full_art", "borderless"])
    if border is None:
        r = rng.random()
        border = BORDERS["black"] if r < 0.55 else BORDERS["white"] if r < 0.75 else \
            BORDERS["silver"] if r < 0.85 else BORDERS["gold"] if r < 0.92 else _random_colour(rng)
        border = _colour(rng, border, 6)
    card = np.empty((h, w, 3), np.uint8)
    card[:] = border
    bw = 0 if style == "borderless" else int(w * rng.uniform(0.035, 0.055))
    inner = card[bw:h - bw, bw:w - bw]
    ih, iw = inner.shape[:2]
    frame = _colour(rng, FRAME_COLOURS[int(rng.integers(len(FRAME_COLOURS)))])
    tex = 0.85 + 0.3 * _smooth_noise(rng, ih, iw, int(rng.integers(4, 20)))
    inner[:] = np.clip(np.asarray(frame, np.float32) * tex, 0, 255).astype(np.uint8)

    def art(ah: int, aw: int) -> np.ndarray:
        if photos is not None and rng.random() < preset.photo_art:
            return photos.crop(rng, aw, ah, min_frac=0.2, jitter=1.0)
        return _art(rng, ah, aw)

    m = int(iw * 0.035)
    light = tuple(int(min(255, v * 0.5 + 130)) for v in frame)
    text_colour = (10, 10, 10) if sum(light) > 380 else (240, 240, 240)
    if style in ("full_art", "borderless"):
        inner[:] = art(ih, iw)
    else:
        art_top, art_bottom = int(ih * 0.11), int(ih * 0.56)
        inner[art_top:art_bottom, m:iw - m] = art(art_bottom - art_top, iw - 2 * m)
        cv2.rectangle(inner, (m, art_top), (iw - m - 1, art_bottom - 1), (20, 20, 20), 1)
    m2 = m + (int(iw * 0.03) if style == "borderless" else 0)   # borderless text sits further in
    overlay = inner.copy()
    title = (m2, int(ih * 0.025), iw - m2, int(ih * 0.095))
    typeline = (m2, int(ih * 0.57), iw - m2, int(ih * 0.635))
    textbox = (m2 + 3, int(ih * 0.645), iw - m2 - 3, int(ih * 0.93))
    for x0, y0, x1, y1 in (title, typeline):
        cv2.rectangle(overlay, (x0, y0), (x1, y1), light, -1, cv2.LINE_AA)
        cv2.rectangle(overlay, (x0, y0), (x1, y1), (30, 30, 30), 1, cv2.LINE_AA)
    cv2.rectangle(overlay, textbox[:2], textbox[2:], _colour(rng, (225, 215, 190), 15), -1)
    alpha = 1.0 if style == "bordered" else rng.uniform(0.45, 0.75)
    cv2.addWeighted(overlay, alpha, inner, 1 - alpha, 0, dst=inner)
    _put_text(inner, rng, _random_text(rng, 3, 7)[:14], (title[0] + 5, title[3] - 8), 0.5, text_colour)
    for k in range(int(rng.integers(0, 6))):   # mana symbols: a disc and a glyph
        cx, cy = title[2] - 10 - k * 15, (title[1] + title[3]) // 2
        cv2.circle(inner, (cx, cy), 6, _random_colour(rng), -1, cv2.LINE_AA)
        cv2.circle(inner, (cx, cy), 2, (20, 20, 20), -1, cv2.LINE_AA)
    _put_text(inner, rng, _random_text(rng, 4, 8)[:16], (typeline[0] + 5, typeline[3] - 7), 0.42, text_colour)
    cv2.circle(inner, (typeline[2] - 12, (typeline[1] + typeline[3]) // 2), 6, _random_colour(rng), -1, cv2.LINE_AA)
    # Rules text in paragraphs of small lines, as dense as a real card's.
    y = textbox[1] + 13
    while y < textbox[3] - 5:
        if rng.random() < 0.15:
            y += 6   # paragraph break
        _put_text(inner, rng, " ".join(_random_text(rng, 2, 7) for _ in range(3))[:30], (textbox[0] + 5, y),
                  0.3, (25, 25, 25))
        y += int(rng.integers(10, 13))
    if rng.random() < 0.5:   # power / toughness box
        px0, py0 = iw - m2 - 50, int(ih * 0.905)
        cv2.rectangle(inner, (px0, py0), (iw - m2, py0 + 24), light, -1, cv2.LINE_AA)
        _put_text(inner, rng, f"{rng.integers(0, 10)}/{rng.integers(0, 10)}", (px0 + 10, py0 + 18), 0.5, text_colour)
    info = (200, 200, 200) if sum(border) < 300 else (30, 30, 30)
    if bw:
        _put_text(card, rng, _random_text(rng, 3, 6)[:20], (bw + 4, h - bw // 2 + 2), 0.25, info)
    if rng.random() < preset.foil:
        card = _foil(rng, card)
    return card


def _card_back(rng: np.random.Generator) -> np.ndarray:
    """A card's back: brown border, a mottled brown field, a blue-violet oval and a red-gold band."""
    w, h = CARD_W, CARD_H
    base = np.asarray(_colour(rng, CARD_BACK_BROWN, 8), np.float32)
    field = base * (0.7 + 0.6 * _smooth_noise(rng, h, w, int(rng.integers(8, 24))))
    card = np.clip(field, 0, 255).astype(np.uint8)
    bw = int(w * rng.uniform(0.04, 0.06))
    cv2.rectangle(card, (0, 0), (w - 1, h - 1), tuple(int(v * 0.6) for v in base), bw, cv2.LINE_AA)
    oval = np.zeros((h, w), np.uint8)
    cv2.ellipse(oval, (w // 2, h // 2), (int(w * 0.36), int(h * 0.4)), 0, 0, 360, 255, -1, cv2.LINE_AA)
    swirl = _smooth_noise(rng, h, w, 10, 3) * np.array([60, 50, 150], np.float32) + np.array([30, 20, 60], np.float32)
    a = (oval.astype(np.float32) / 255)[..., None]
    card = (card * (1 - a) + swirl * a).astype(np.uint8)
    cv2.ellipse(card, (w // 2, h // 2), (int(w * 0.36), int(h * 0.4)), 0, 0, 360, (200, 160, 70), 3, cv2.LINE_AA)
    cv2.ellipse(card, (w // 2, int(h * 0.3)), (int(w * 0.3), int(h * 0.06)), 0, 0, 360, (190, 60, 30), -1, cv2.LINE_AA)
    _put_text(card, rng, "Magic", (int(w * 0.3), int(h * 0.32)), 0.8, (240, 200, 90), 2)
    return card


def _foil(rng: np.random.Generator, card: np.ndarray) -> np.ndarray:
    """A foil card's rainbow sheen: a hue gradient across the face, strongest along a diagonal."""
    h, w = card.shape[:2]
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    ang = rng.uniform(0, math.pi)
    u = (xx * math.cos(ang) + yy * math.sin(ang)) / max(h, w)
    phase = u * rng.uniform(2, 6) * 2 * math.pi
    rainbow = np.stack([np.sin(phase), np.sin(phase + 2.1), np.sin(phase + 4.2)], -1)
    strength = rng.uniform(15, 45) * np.exp(-((u - rng.uniform(0.2, 0.8)) ** 2) / 0.05)[..., None]
    return np.clip(card.astype(np.float32) + rainbow * strength + 0.5 * strength, 0, 255).astype(np.uint8)


# ----------------------------------------------------------------------------- the scene

def _structured_background(rng: np.random.Generator) -> np.ndarray:
    """A room or a desk: surfaces split by long straight edges, with objects of straight outlines."""
    h, w = IMAGE_HEIGHT, IMAGE_WIDTH
    img = np.empty((h, w, 3), np.float32)

    def material() -> np.ndarray:
        return _muted_colour(rng)

    # A table edge or a wall / floor split: two surfaces along a long line across the frame.
    img[:] = material() * (0.8 + 0.4 * _smooth_noise(rng, h, w, int(rng.integers(2, 12)), 1))
    p = rng.uniform([0, 0], [w, h])
    ang = rng.uniform(0, math.pi)
    d = np.array([math.cos(ang), math.sin(ang)]) * 2000
    far = np.array([-math.sin(ang), math.cos(ang)]) * 2000
    poly = np.array([p - d, p + d, p + d + far, p - d - far], np.int32)
    cv2.fillPoly(img, [poly], tuple(float(v) for v in material()), cv2.LINE_AA)
    if rng.random() < 0.6:   # the lit bevel of the table's edge
        cv2.line(img, tuple(int(v) for v in p - d), tuple(int(v) for v in p + d), (235, 235, 225),
                 int(rng.integers(1, 4)), cv2.LINE_AA)
    for _ in range(int(rng.integers(1, 5))):
        kind = rng.integers(5)
        c = tuple(float(v) for v in material())
        if kind == 0:      # shelf or door / window frame: a long band, nearly axis-aligned
            vertical = rng.random() < 0.5
            t = int(rng.integers(6, 40))
            pos = int(rng.integers(0, w if vertical else h))
            tilt = int(rng.normal(0, 15))
            a, b = ((pos, 0), (pos + tilt, h)) if vertical else ((0, pos), (w, pos + tilt))
            cv2.line(img, a, b, c, t, cv2.LINE_AA)
            cv2.line(img, a, b, tuple(v * 0.6 for v in c), 1, cv2.LINE_AA)
        elif kind == 1:    # a row of books: spines of random widths
            y0, y1 = sorted(rng.integers(0, h, 2))
            x = int(rng.integers(-50, w // 2))
            while x < w and y1 - y0 > 20:
                bw = int(rng.integers(12, 45))
                top = y0 + int(rng.integers(0, max(1, (y1 - y0) // 4)))
                cv2.rectangle(img, (x, top), (x + bw, y1), tuple(float(v) for v in _random_colour(rng)), -1)
                cv2.line(img, (x, top), (x, y1), (20, 20, 20), 1)
                x += bw + int(rng.integers(0, 3))
        elif kind == 2:    # a keyboard: a slab with a grid of keys
            kw, kh = int(rng.uniform(0.5, 1.2) * w), int(rng.uniform(0.15, 0.3) * h)
            x0, y0 = int(rng.integers(-kw // 2, w - kw // 2)), int(rng.integers(0, h - kh // 2))
            slab = _colour(rng, (40, 40, 44) if rng.random() < 0.6 else (220, 220, 215), 10)
            cv2.rectangle(img, (x0, y0), (x0 + kw, y0 + kh), slab, -1, cv2.LINE_AA)
            key = max(8, kw // 16)
            keyc = tuple(min(255, v + 25) for v in slab)
            for ky in range(y0 + 4, y0 + kh - key, key + 3):
                for kx in range(x0 + 4, x0 + kw - key, key + 3):
                    cv2.rectangle(img, (kx, ky), (kx + key, ky + key), keyc, -1)
        elif kind == 3:    # a phone: a dark rounded slab, its screen sometimes lit
            pw = int(rng.uniform(0.2, 0.4) * w)
            ph = int(pw * rng.uniform(1.9, 2.2))
            box = cv2.boxPoints(((float(rng.uniform(0, w)), float(rng.uniform(0, h))), (pw, ph),
                                 float(rng.uniform(-90, 90)))).astype(np.int32)
            cv2.fillPoly(img, [box], (18, 18, 20), cv2.LINE_AA)
            if rng.random() < 0.5:
                inner = ((box - box.mean(0)) * 0.9 + box.mean(0)).astype(np.int32)
                cv2.fillPoly(img, [inner], tuple(float(v) for v in _random_colour(rng)), cv2.LINE_AA)
        else:              # a window or picture frame: a rectangle outline
            x0, y0 = int(rng.integers(-w // 4, w)), int(rng.integers(-h // 4, h))
            x1, y1 = x0 + int(rng.integers(80, w)), y0 + int(rng.integers(80, h))
            cv2.rectangle(img, (x0, y0), (x1, y1), c, int(rng.integers(6, 30)), cv2.LINE_AA)
    return img


def _muted_colour(rng: np.random.Generator) -> np.ndarray:
    """Walls, tables and furniture are mostly muted; a few are saturated."""
    base = np.array(_random_colour(rng), np.float32)
    return base * 0.3 + base.mean() * 0.7 if rng.random() < 0.8 else base


def _plain_background(rng: np.random.Generator, dark: bool) -> np.ndarray:
    h, w = IMAGE_HEIGHT, IMAGE_WIDTH
    base = _muted_colour(rng) * (rng.uniform(0.05, 0.25) if dark else 1.0)
    return base * (0.7 + 0.6 * _smooth_noise(rng, h, w, int(rng.integers(2, 20)), 3))


def _shade_capsule(img: np.ndarray, alpha: np.ndarray, p0: np.ndarray, p1: np.ndarray, width: float,
                   skin: np.ndarray, rng: np.random.Generator, nail: bool) -> None:
    """Paint a finger from p0 (tip) to p1 (base) onto img (float32) and max it into alpha.

    Shading follows a cylinder: brightest along a line off the axis, darker at the sides; the work
    is done inside the finger's bounding box only.
    """
    h, w = alpha.shape
    r = width / 2
    lo = np.floor(np.minimum(p0, p1) - r - 2).astype(int).clip(0, [w, h])
    hi = np.ceil(np.maximum(p0, p1) + r + 2).astype(int).clip(0, [w, h])
    if (hi <= lo).any():
        return
    yy, xx = np.mgrid[lo[1]:hi[1], lo[0]:hi[0]].astype(np.float32)
    d = p1 - p0
    length2 = float(d @ d) or 1.0
    t = np.clip(((xx - p0[0]) * d[0] + (yy - p0[1]) * d[1]) / length2, 0, 1)
    dx, dy = xx - (p0[0] + t * d[0]), yy - (p0[1] + t * d[1])
    dist = np.sqrt(dx * dx + dy * dy)
    a = np.clip(r + 0.5 - dist, 0, 1)        # anti-aliased edge
    # Signed lateral position -1..1 for the cylinder shading, the highlight a little off the axis.
    n = np.array([-d[1], d[0]]) / math.sqrt(length2)
    lat = np.clip((dx * n[0] + dy * n[1]) / r, -1, 1)
    shade = 1.05 - 0.45 * (lat - rng.uniform(-0.4, 0.4)) ** 2
    colour = skin[None, None, :] * shade[..., None]
    if nail:   # a lighter, glossier oval just behind the tip
        nc = p0 + d / math.sqrt(length2) * r * 0.9
        nd = np.sqrt(((xx - nc[0]) * d[0] + (yy - nc[1]) * d[1]) ** 2 / length2 / (r * 0.75) ** 2
                     + ((xx - nc[0]) * n[0] + (yy - nc[1]) * n[1]) ** 2 / (r * 0.6) ** 2)
        colour = np.where((nd < 1)[..., None], np.minimum(255, skin * 1.15 + 25), colour)
    region = img[lo[1]:hi[1], lo[0]:hi[0]]
    region[:] = region * (1 - a[..., None]) + colour * a[..., None]
    np.maximum(alpha[lo[1]:hi[1], lo[0]:hi[0]], a, out=alpha[lo[1]:hi[1], lo[0]:hi[0]])


def _rotate(v: np.ndarray, deg: float) -> np.ndarray:
    c, s = math.cos(math.radians(deg)), math.sin(math.radians(deg))
    return np.array([c * v[0] - s * v[1], s * v[0] + c * v[1]])


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) + 1e-9)


def _skin(rng: np.random.Generator) -> np.ndarray:
    return np.asarray(_colour(rng, SKIN_TONES[int(rng.integers(len(SKIN_TONES)))], 10), np.float32)


def _thumb_over_corner(rng, img, alpha, quad, card_w, skin) -> None:
    """A thumb lying over one corner, coming from outside the card: the corner is hidden under it."""
    k = int(rng.integers(4))
    corner, centre = quad[k], quad.mean(0)
    out = _rotate(_unit(corner - centre), rng.uniform(-35, 35))
    width = card_w * rng.uniform(0.17, 0.27)
    side = np.array([-out[1], out[0]])
    # Tip inside the card, past the corner; the axis passes within a quarter width of the corner.
    tip = corner - out * width * rng.uniform(0.5, 1.3) + side * width * rng.uniform(-0.25, 0.25)
    base = tip + out * card_w * rng.uniform(1.2, 2.5)
    _shade_capsule(img, alpha, tip, base, width, skin, rng, nail=True)
    if rng.random() < 0.6:   # the ball of the thumb / the palm behind it
        _shade_capsule(img, alpha, base - out * width * 0.5, base + out * card_w, width * 2.2, skin * 0.95, rng,
                       nail=False)


def _fingers_over_edge(rng, img, alpha, quad, card_w, skin) -> None:
    """One to three fingers across one edge, from outside the card."""
    k = int(rng.integers(4))
    p0, p1 = quad[k], quad[(k + 1) % 4]
    out = _rotate(_unit((p0 + p1) / 2 - quad.mean(0)), rng.uniform(-25, 25))
    width = card_w * rng.uniform(0.12, 0.19)
    at = p0 + (p1 - p0) * rng.uniform(0.2, 0.8)
    along = _unit(p1 - p0)
    for j in range(int(rng.integers(1, 4))):
        tip = at + along * width * 1.05 * j - out * card_w * rng.uniform(0.03, 0.2)
        _shade_capsule(img, alpha, tip, tip + out * card_w * 2.0, width * rng.uniform(0.9, 1.1), skin, rng, True)


def _hand_from_border(rng, img, alpha, skin) -> None:
    """A hand entering from one frame border: a palm partly out of frame and 2-4 fingers."""
    h, w = alpha.shape
    side = int(rng.integers(4))
    pos = rng.uniform(0.15, 0.85)
    entry = [np.array([pos * w, -20.0]), np.array([w + 20.0, pos * h]), np.array([pos * w, h + 20.0]),
             np.array([-20.0, pos * h])][side]
    inward = _rotate([np.array([0.0, 1]), np.array([-1.0, 0]), np.array([0.0, -1]), np.array([1.0, 0])][side],
                     rng.uniform(-30, 30))
    size = rng.uniform(0.25, 0.45) * w
    palm = entry + inward * size * 0.4
    _shade_capsule(img, alpha, palm - inward * size, palm, size * 0.9, skin * 0.95, rng, nail=False)
    across = np.array([-inward[1], inward[0]])
    n = int(rng.integers(2, 5))
    for j in range(n):
        start = palm + across * size * 0.35 * (j - (n - 1) / 2)
        tip = start + _rotate(inward, rng.uniform(-12, 12)) * size * rng.uniform(0.6, 0.9)
        _shade_capsule(img, alpha, tip, start, size * 0.2, skin, rng, nail=True)


def _fingers_behind(rng, img, quad, card_w, skin) -> None:
    """Fingertips behind the card showing past one edge (painted before the card is composited)."""
    k = int(rng.integers(4))
    p0, p1 = quad[k], quad[(k + 1) % 4]
    out = _rotate(_unit((p0 + p1) / 2 - quad.mean(0)), rng.uniform(-20, 20))
    width = card_w * rng.uniform(0.12, 0.18)
    at = p0 + (p1 - p0) * rng.uniform(0.15, 0.6)
    dummy = np.zeros(img.shape[:2], np.float32)
    for j in range(int(rng.integers(1, 4))):
        base = at + _unit(p1 - p0) * width * 1.05 * j - out * card_w * 0.3
        tip = base + out * card_w * rng.uniform(0.35, 0.5)
        _shade_capsule(img, dummy, tip, base, width, skin, rng, nail=True)


def _glare_band(rng, img: np.ndarray, card_alpha: np.ndarray, quad: np.ndarray) -> None:
    """A specular band across a glossy card: a long soft stripe, on the card only."""
    h, w = card_alpha.shape
    g = np.zeros((h // 4, w // 4), np.float32)
    c = (quad.mean(0) + rng.normal(0, 30, 2)) / 4
    d = _rotate(np.array([1.0, 0]), rng.uniform(0, 180)) * 1000
    cv2.line(g, tuple(int(v) for v in c - d), tuple(int(v) for v in c + d), 1.0, int(rng.integers(2, 10)))
    g = cv2.resize(cv2.GaussianBlur(g, (0, 0), rng.uniform(1.5, 5)), (w, h))
    img += (rng.uniform(70, 200) * g * card_alpha)[..., None]


def _exposure(rng: np.random.Generator, preset: Preset, img: np.ndarray) -> tuple[np.ndarray, float]:
    """Low light, over-exposure or a strong white-balance cast; returns the image and extra noise sigma."""
    noise = 0.0
    r = rng.random()
    if r < preset.low_light:
        img = 255 * (img.clip(0, None) / 255) ** rng.uniform(1.2, 1.8) * rng.uniform(0.25, 0.55)
        noise = rng.uniform(6, 18)
    elif r < preset.low_light + preset.over_exposure:
        img = img * rng.uniform(1.4, 2.2)
    if rng.random() < preset.strong_cast:
        img = img * rng.uniform(0.7, 1.3, 3).astype(np.float32)
    return img, noise


def scene_background(rng: np.random.Generator, preset: Preset, photos: PhotoPool | None, dark_scene: bool = False
                     ) -> np.ndarray:
    """(640, 480, 3) float32: a photo, a room or desk, or a plain (dark) surface, with clutter and
    depth of field."""
    h, w = IMAGE_HEIGHT, IMAGE_WIDTH
    if photos is not None and not dark_scene and rng.random() < preset.photo_background:
        img = photos.crop(rng, w, h, min_frac=0.4, jitter=0.5).astype(np.float32)
    elif not dark_scene and rng.random() < preset.structured:
        img = _structured_background(rng)
    else:
        img = _plain_background(rng, dark_scene)
    if rng.random() < 0.5:
        clutter = np.clip(img, 0, 255).astype(np.uint8)
        _clutter(rng, clutter)
        img = clutter.astype(np.float32)
    if rng.random() < preset.background_blur:   # depth of field: the card is in focus, the room is not
        img = cv2.GaussianBlur(img, (0, 0), rng.uniform(1.5, 5))
    return img


def finish(rng: np.random.Generator, preset: Preset, img: np.ndarray) -> np.ndarray:
    """Light, exposure and the camera: the float32 scene -> the (640, 480, 3) uint8 frame."""
    img, noise = _exposure(rng, preset, _lighting(rng, img))
    return _camera_noisy(rng, img, noise)


def render_scene_v2(rng: np.random.Generator, preset: Preset = V2, negative: bool = False,
                    photos: PhotoPool | None = None) -> Scene:
    """One 480x640 v2 frame: RGB image, 0/255 mask (fingers excluded), the true corners and their
    states (outside the frame, hidden under a finger, visible)."""
    h, w = IMAGE_HEIGHT, IMAGE_WIDTH
    dark_scene = not negative and rng.random() < preset.dark_border_dark_scene
    img = scene_background(rng, preset, photos, dark_scene)
    mask = np.zeros((h, w), np.uint8)
    if negative:
        if rng.random() < preset.border_hand:
            _hand_from_border(rng, img, np.zeros((h, w), np.float32), _skin(rng))
        img, noise = _exposure(rng, preset, _lighting(rng, img))
        return Scene(_camera_noisy(rng, img, noise), mask, None, None)

    border = _colour(rng, BORDERS["black"], 4) if dark_scene else None
    card = render_card_v2(rng, preset, photos, border)
    quad = _pose_corners(rng, preset.min_area, preset.max_area, preset.outside)
    card_w = float(np.linalg.norm(quad[1] - quad[0]))
    if rng.random() < preset.touching_region:
        # A region of the card's own border colour touching one edge (a black mat, white paper).
        k = int(rng.integers(4))
        out = _unit((quad[k] + quad[(k + 1) % 4]) / 2 - quad.mean(0))
        reach = card_w * rng.uniform(0.3, 1.5)
        poly = np.array([quad[k], quad[(k + 1) % 4], quad[(k + 1) % 4] + out * reach, quad[k] + out * reach])
        tone = tuple(float(v) for v in _colour(rng, card[2, CARD_W // 2], 8))
        cv2.fillPoly(img, [poly.astype(np.int32)], tone, cv2.LINE_AA)
    skin = _skin(rng)
    if rng.random() < preset.behind_fingers:
        _fingers_behind(rng, img, quad, card_w, skin)
    src = np.array([[-0.5, -0.5], [CARD_W - 0.5, -0.5], [CARD_W - 0.5, CARD_H - 0.5], [-0.5, CARD_H - 0.5]],
                   np.float32)
    hom = cv2.getPerspectiveTransform(src, quad.astype(np.float32))
    warped = cv2.warpPerspective(card, hom, (w, h), flags=cv2.INTER_LINEAR).astype(np.float32)
    alpha = cv2.warpPerspective(_CARD_ALPHA, hom, (w, h), flags=cv2.INTER_LINEAR)
    if rng.random() < 0.5:   # the card's drop shadow
        sh = cv2.GaussianBlur(alpha, (0, 0), rng.uniform(2, 8))
        sh = cv2.warpAffine(sh, np.float32([[1, 0, rng.integers(-8, 9)], [0, 1, rng.integers(-8, 9)]]), (w, h))
        img *= (1 - rng.uniform(0.2, 0.5) * sh)[..., None]
    img = cv2.blendLinear(warped, img, alpha, 1.0 - alpha)
    if rng.random() < preset.glare_band:
        _glare_band(rng, img, alpha, quad)
    occluder = np.zeros((h, w), np.float32)
    if rng.random() < preset.thumb_corner:
        _thumb_over_corner(rng, img, occluder, quad, card_w, skin)
    if rng.random() < preset.edge_fingers:
        _fingers_over_edge(rng, img, occluder, quad, card_w, skin)
    if rng.random() < preset.border_hand:
        _hand_from_border(rng, img, occluder, skin)
    mask[(alpha >= 0.5) & (occluder < 0.5)] = 255
    corners = order_corners(quad)
    img, noise = _exposure(rng, preset, _lighting(rng, img))
    return Scene(_camera_noisy(rng, img, noise), mask, corners, corner_states(corners, occluder))


def _camera_noisy(rng: np.random.Generator, img: np.ndarray, sigma: float) -> np.ndarray:
    """v1's camera (blur, sensor noise, JPEG) after the extra noise of a low-light exposure."""
    if sigma > 0:
        img = img + rng.standard_normal(img.shape[:2] + (1,), dtype=np.float32) * sigma
    return _camera(rng, img)
