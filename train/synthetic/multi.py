"""Scenes with several cards: rows and grids on a table, fans and piles, binder pages, a hand
holding a fan, cards in penny sleeves and top-loaders, the layout partly out of the frame.

Every layout lies on one plane (a table, a binder page, a fanned hand) seen through a pinhole
camera, so cards share its perspective. Cards are painted bottom to top: a card on top hides what
lies under it, and the mask is the union of the card pixels left in sight (a sleeve's or a
top-loader's clear margin is not card). Each card keeps its true corners; a corner under another
card, a finger or the binder page's frame is hidden (state 1), one outside the frame state 0.

A card mostly hidden by others (less than MIN_VISIBLE_FRACTION of it in sight) gets no label: a
strip of a card is not a card to scan, and a detector should not report one. Its pixels stay in
the mask, which is about what is card, not about what can be scanned.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import cv2
import numpy as np

from common import IMAGE_HEIGHT, IMAGE_WIDTH, order_corners
from synthetic import v1
from synthetic.v1 import _CARD_ALPHA, CARD_H, CARD_W, HIDDEN, OUTSIDE, VISIBLE

# Below this share of its own area in sight, a card is not labelled (see the module docstring).
MIN_VISIBLE_FRACTION = 0.4
# Layouts and how often each is drawn.
LAYOUTS = {"row": 0.2, "grid": 0.25, "fan": 0.12, "pile": 0.1, "binder": 0.15, "hand_fan": 0.08, "scatter": 0.1}
MAX_CARDS = 12


@dataclass
class MultiScene:
    image: np.ndarray                  # (640, 480, 3) uint8 RGB
    mask: np.ndarray                   # (640, 480) uint8, 255 = card in sight
    corners: np.ndarray                # (N, 4, 2) float, each card TL, TR, BR, BL (pixel-index)
    states: list[list[int]]            # (N, 4) OUTSIDE / HIDDEN / VISIBLE


@dataclass
class Style:
    """How a preset draws what the layout places: the card faces, the surface under them and the
    photometric finish (v1 or v2 look)."""
    card: Callable[[np.random.Generator], np.ndarray]                   # -> (CARD_H, CARD_W, 3) uint8
    background: Callable[[np.random.Generator], np.ndarray]             # -> (640, 480, 3) float32
    finish: Callable[[np.random.Generator, np.ndarray], np.ndarray]     # float32 scene -> uint8 image
    skin: Callable[[np.random.Generator], np.ndarray] | None = None      # hands (v2 only)
    hands: float = 0.0          # a hand from the frame border over a row or grid
    glare: float = 0.2          # a glare band over a card
    touching: float = 0.35      # rows and grids with no gap between cards
    sleeve: float = 0.15        # a card in a penny sleeve
    toploader: float = 0.07     # a card in a top-loader
    outside: float = 0.2        # the layout runs out of the frame


# ----------------------------------------------------------------------------- layouts
# A layout places cards on the plane: (cx, cy, angle in degrees) each, in card pixels (the card raster
# is CARD_W x CARD_H), bottom to top. Gaps are in card widths.

def _gap(rng: np.random.Generator, touching: float) -> float:
    r = rng.random()
    if r < touching:
        return 0.0
    if r < touching + (1 - touching) * 0.55:
        return float(rng.uniform(0.02, 0.12))     # close, as cards laid out by hand
    return float(rng.uniform(0.15, 1.5))            # apart


def _grid(rng, rows: int, cols: int, touching: float, jitter: float = 2.0) -> list[tuple[float, float, float]]:
    gx, gy = _gap(rng, touching) * CARD_W, _gap(rng, touching) * CARD_W
    sideways = rng.random() < 0.15            # every card turned a quarter (a landscape row)
    w, h = (CARD_H, CARD_W) if sideways else (CARD_W, CARD_H)
    empty = 0.1 if rows * cols > 3 else 0.0
    cards = []
    for r in range(rows):
        for c in range(cols):
            if rng.random() < empty:
                continue
            # No jitter between touching cards: it would push them into each other.
            j = 0.0 if gx == 0 or gy == 0 else jitter
            cards.append((c * (w + gx) + rng.normal(0, j), r * (h + gy) + rng.normal(0, j),
                          (90.0 if sideways else 0.0) + rng.normal(0, 0.6 * j)))
    return cards or [(0.0, 0.0, 0.0)]


def _fan(rng, n: int) -> list[tuple[float, float, float]]:
    """Cards turned about a pivot below their bottom edge, each a step further (overlapping)."""
    step = rng.uniform(8, 22)
    radius = CARD_H * rng.uniform(0.55, 0.9)      # pivot to card centre
    start = -step * (n - 1) / 2 + rng.normal(0, 5)
    cards = []
    for i in range(n):
        a = math.radians(start + i * step)
        cards.append((radius * math.sin(a), -radius * math.cos(a), math.degrees(a)))
    return cards


def _pile(rng, n: int) -> list[tuple[float, float, float]]:
    """Cards dropped near each other at any angle, overlapping."""
    spread = CARD_W * rng.uniform(0.5, 1.5)
    return [(rng.normal(0, spread), rng.normal(0, spread), rng.uniform(-180, 180)) for _ in range(n)]


def _scatter(rng, n: int) -> list[tuple[float, float, float]]:
    """Cards spread over a table at random angles, a few touching or overlapping."""
    side = CARD_H * math.sqrt(n) * rng.uniform(1.0, 1.6)
    return [(rng.uniform(0, side), rng.uniform(0, side), rng.normal(0, 25)) for _ in range(n)]


def _count(rng, lo: int, hi: int) -> int:
    return int(rng.integers(lo, hi + 1))


def plan_layout(rng: np.random.Generator, style: Style) -> tuple[str, list[tuple[float, float, float]]]:
    kind = str(rng.choice(list(LAYOUTS), p=np.array(list(LAYOUTS.values())) / sum(LAYOUTS.values())))
    if kind == "row":
        n = _count(rng, 2, 6)
        cards = _grid(rng, 1, n, style.touching) if rng.random() < 0.75 else _grid(rng, n, 1, style.touching)
    elif kind == "grid":
        rows, cols = _count(rng, 2, 4), _count(rng, 2, 4)
        while rows * cols > MAX_CARDS:
            rows -= 1
        cards = _grid(rng, rows, cols, style.touching)
    elif kind in ("fan", "hand_fan"):
        cards = _fan(rng, _count(rng, 2, 6))
    elif kind == "pile":
        cards = _pile(rng, _count(rng, 2, 6))
    elif kind == "scatter":
        cards = _scatter(rng, _count(rng, 2, 8))
    else:   # binder: a 3 x 3 page
        cards = []
    return kind, cards


# ----------------------------------------------------------------------------- geometry

def _plane_to_image(rng: np.random.Generator, extent: np.ndarray, frame_share: float, outside: bool,
                    max_tilt: float = 22.0) -> np.ndarray:
    """(3, 3) homography from plane coordinates to the 480x640 frame (pixel-index): the plane tilted
    towards the camera, turned in the image, its `extent` ((2, 2) min and max corner of what is on it)
    scaled to about `frame_share` of the frame and placed in it (partly out of it when `outside`)."""
    ax, ay = np.radians(rng.uniform(-max_tilt, max_tilt, 2))
    rot = v1._rotation(ax, ay, math.radians(rng.normal(0, 10) if rng.random() < 0.8 else rng.uniform(-180, 180)))
    centre = extent.mean(0)
    corners = np.array([[extent[0, 0], extent[0, 1]], [extent[1, 0], extent[0, 1]], [extent[1, 0], extent[1, 1]],
                        [extent[0, 0], extent[1, 1]]]) - centre
    size = float(np.abs(corners).max())
    focal = rng.uniform(1.0, 2.0) * size * 2
    pts3 = np.c_[corners, np.zeros(4)] @ rot.T
    proj = focal * pts3[:, :2] / (pts3[:, 2] + focal * 1.6)[:, None]
    span = proj.max(0) - proj.min(0)
    scale = math.sqrt(frame_share * IMAGE_WIDTH * IMAGE_HEIGHT / max(span[0] * span[1], 1e-6))
    scale = min(scale, (IMAGE_WIDTH - 8) / span[0], (IMAGE_HEIGHT - 8) / span[1]) if not outside else scale
    proj = (proj - proj.mean(0)) * scale
    lo, hi = -proj.min(0), np.array([IMAGE_WIDTH, IMAGE_HEIGHT]) - proj.max(0)
    shift = rng.uniform(np.minimum(lo, hi), np.maximum(lo, hi))
    if outside:     # push a side of the layout out of the frame
        axis = int(rng.integers(2))
        push = rng.uniform(0.1, 0.3) * (proj[:, axis].max() - proj[:, axis].min())
        shift[axis] = lo[axis] - push if rng.random() < 0.5 else hi[axis] + push
    return cv2.getPerspectiveTransform(corners.astype(np.float32), (proj + shift - 0.5).astype(np.float32)) @ \
        np.array([[1, 0, -centre[0]], [0, 1, -centre[1]], [0, 0, 1]])


def _card_on_plane(cx: float, cy: float, angle: float) -> np.ndarray:
    """(3, 3) affine: card raster pixel-index (its outer edges at -0.5 and CARD_W - 0.5) -> plane,
    the card centred at (cx, cy) and turned by `angle` degrees."""
    a = math.radians(angle)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, cx], [s, c, cy], [0, 0, 1]]) @ np.array([[1, 0, -(CARD_W - 1) / 2],
                                                                       [0, 1, -(CARD_H - 1) / 2], [0, 0, 1]])


def _apply(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    p = np.c_[pts, np.ones(len(pts))] @ h.T
    return p[:, :2] / p[:, 2:3]


CARD_OUTLINE = np.array([[-0.5, -0.5], [CARD_W - 0.5, -0.5], [CARD_W - 0.5, CARD_H - 0.5], [-0.5, CARD_H - 0.5]])


def _extent(cards: list[tuple[float, float, float]], pad: float = 0.0) -> np.ndarray:
    pts = np.concatenate([_apply(_card_on_plane(*c), CARD_OUTLINE) for c in cards])
    return np.stack([pts.min(0) - pad, pts.max(0) + pad])


# ----------------------------------------------------------------------------- painting

def _warp(img: np.ndarray, hom: np.ndarray) -> np.ndarray:
    return cv2.warpPerspective(img, hom, (IMAGE_WIDTH, IMAGE_HEIGHT), flags=cv2.INTER_LINEAR)


def _paint(canvas: np.ndarray, layer: np.ndarray, alpha: np.ndarray) -> None:
    canvas *= (1 - alpha)[..., None]
    canvas += layer * alpha[..., None]


def _sleeve(rng, canvas: np.ndarray, hom_card: np.ndarray, toploader: bool) -> np.ndarray:
    """A clear sleeve (or a rigid top-loader) around the card whose raster-to-image map is hom_card:
    its edges and a haze are painted over the frame; returns its (H, W) alpha (for nothing but the
    caller's bookkeeping: the clear margin is not card)."""
    m = CARD_W * (rng.uniform(0.07, 0.12) if toploader else rng.uniform(0.015, 0.035))
    top = m + (0 if toploader else CARD_W * rng.uniform(0.02, 0.08))      # a penny sleeve is longer, open at the top
    outline = np.array([[-m, -top], [CARD_W + m, -top], [CARD_W + m, CARD_H + m], [-m, CARD_H + m]])
    pts = _apply(hom_card, outline)
    area = np.zeros(canvas.shape[:2], np.float32)
    cv2.fillPoly(area, [np.round(pts * 16).astype(np.int32)], 1.0, cv2.LINE_AA, shift=4)
    haze = rng.uniform(0.04, 0.12)
    canvas += (haze * (235 - canvas)) * area[..., None]
    edge = np.zeros_like(area)
    thick = 3 if toploader else 1
    cv2.polylines(edge, [np.round(pts * 16).astype(np.int32)], True, 1.0, thick, cv2.LINE_AA, shift=4)
    if toploader:    # the rigid holder's inner edge too
        inner = _apply(hom_card, outline * 0.5 + np.array([[-0.5, -0.5], [CARD_W, -0.5], [CARD_W, CARD_H],
                                                              [-0.5, CARD_H]]) * 0.5)
        cv2.polylines(edge, [np.round(inner * 16).astype(np.int32)], True, 0.6, 1, cv2.LINE_AA, shift=4)
    canvas += (rng.uniform(0.25, 0.6) * (245 - canvas)) * edge[..., None]
    if rng.random() < 0.5:
        streak = np.zeros_like(area)
        a, b = pts[int(rng.integers(4))], pts[int(rng.integers(4))]
        cv2.line(streak, tuple(int(v) for v in a), tuple(int(v) for v in b), 1.0, int(rng.integers(4, 16)))
        streak = cv2.GaussianBlur(streak, (0, 0), 4) * area
        canvas += (rng.uniform(40, 120) * streak)[..., None]
    return area


def _binder_page(rng, style: Style) -> tuple[np.ndarray, list[tuple[float, float, float]], np.ndarray, float]:
    """A 3 x 3 binder page: (page raster (H, W, 3) float32 in plane px, the cards' placements, the
    pockets' outlines (9, 4, 2) in plane px, pocket margin px). The plane's origin is the page's top left."""
    margin = CARD_W * rng.uniform(0.04, 0.08)
    border = CARD_W * rng.uniform(0.15, 0.3)
    pw, ph = CARD_W + 2 * margin, CARD_H + 2 * margin
    width, height = int(border * 2 + 3 * pw), int(border * 2 + 3 * ph)
    base = np.array([12, 12, 14] if rng.random() < 0.6 else v1._colour(rng, (225, 225, 220), 10), np.float32)
    page = np.empty((height, width, 3), np.float32)
    page[:] = base
    page *= 0.9 + 0.2 * v1._smooth_noise(rng, height, width, 6)
    cards, pockets = [], []
    for r in range(3):
        for c in range(3):
            x0, y0 = border + c * pw, border + r * ph
            pockets.append([[x0, y0], [x0 + pw, y0], [x0 + pw, y0 + ph], [x0, y0 + ph]])
            if rng.random() < 0.08:
                continue       # an empty pocket
            cards.append((x0 + pw / 2 + rng.normal(0, margin * 0.3), y0 + ph / 2 + rng.normal(0, margin * 0.3),
                          rng.normal(0, 1.0)))
    return page, cards, np.array(pockets, np.float64), margin


def _seams(rng, canvas: np.ndarray, hom: np.ndarray, pockets: np.ndarray) -> None:
    """The pockets' welded seams and the sheet's sheen over the page (after the cards: they are inside)."""
    lines = np.zeros(canvas.shape[:2], np.float32)
    for quad in pockets:
        pts = _apply(hom, quad)
        cv2.polylines(lines, [np.round(pts * 16).astype(np.int32)], True, 1.0, 2, cv2.LINE_AA, shift=4)
    tone = 200 if rng.random() < 0.5 else 40
    canvas += (0.5 * (tone - canvas)) * lines[..., None]
    canvas += rng.uniform(3, 12)      # the plastic sheet's haze


def _glare(rng, canvas: np.ndarray, over: np.ndarray) -> None:
    """A soft specular band across the frame, on the pixels of `over` (a card or a plastic sheet)."""
    h, w = over.shape
    g = np.zeros((h // 4, w // 4), np.float32)
    c = rng.uniform([0, 0], [w // 4, h // 4])
    d = np.array([math.cos(a := rng.uniform(0, math.pi)), math.sin(a)]) * 1000
    cv2.line(g, tuple(int(v) for v in c - d), tuple(int(v) for v in c + d), 1.0, int(rng.integers(2, 12)))
    g = cv2.resize(cv2.GaussianBlur(g, (0, 0), rng.uniform(1.5, 6)), (w, h))
    canvas += (rng.uniform(60, 180) * g * over)[..., None]


def _hand_over(rng, canvas: np.ndarray, occluder: np.ndarray, pivot: np.ndarray, towards: np.ndarray,
               card_w: float, skin: np.ndarray) -> None:
    """A hand holding a fan at its pivot: palm and thumb over the cards' bottom corners."""
    from synthetic.v2 import _shade_capsule, _unit

    up = _unit(towards - pivot)
    side = np.array([-up[1], up[0]])
    palm = pivot - up * card_w * rng.uniform(0.1, 0.4)
    _shade_capsule(canvas, occluder, palm - up * card_w * 1.5, palm + up * card_w * 0.2, card_w * rng.uniform(1.0, 1.4),
                   skin * 0.95, rng, nail=False)
    thumb_tip = palm + up * card_w * rng.uniform(0.5, 0.8) + side * card_w * rng.normal(0, 0.15)
    _shade_capsule(canvas, occluder, thumb_tip, palm, card_w * 0.22, skin, rng, nail=True)


def render_multi_scene(rng: np.random.Generator, style: Style, attempts: int = 8) -> MultiScene:
    """One 480x640 frame with several cards (2 to MAX_CARDS) in one of LAYOUTS; a layout pushed
    out of the frame so far that no card is left to label is drawn again (same stream)."""
    for _ in range(attempts - 1):
        scene = _render_multi(rng, style)
        if len(scene.corners):
            return scene
    return _render_multi(rng, style)


def _render_multi(rng: np.random.Generator, style: Style) -> MultiScene:
    h, w = IMAGE_HEIGHT, IMAGE_WIDTH
    kind, cards = plan_layout(rng, style)
    page = pockets = None
    if kind == "binder":
        page, cards, pockets, _ = _binder_page(rng, style)
        extent = np.array([[0.0, 0.0], [page.shape[1], page.shape[0]]])
    else:
        extent = _extent(cards, pad=CARD_W * 0.1)
    outside = rng.random() < style.outside
    # The layout covers more of the frame the more cards it holds, each card 1-35 % of the frame.
    share = rng.uniform(0.35, 0.95) if len(cards) > 2 else rng.uniform(0.25, 0.8)
    hom = _plane_to_image(rng, extent, share, outside)
    canvas = style.background(rng).astype(np.float32)
    if page is not None:       # the page (and the binder around it) lies on the table
        page_alpha = np.ones(page.shape[:2], np.float32)
        _paint(canvas, _warp(page, hom), _warp(page_alpha, hom))
    owner = np.full((h, w), -1, np.int32)           # which card each pixel shows (-1: none)
    occluder = np.zeros((h, w), np.float32)         # fingers in front of the cards
    quads = []
    shared_face = style.card(rng) if rng.random() < 0.2 else None     # several copies of one card
    for cx, cy, angle in cards:
        face = shared_face if shared_face is not None and rng.random() < 0.5 else style.card(rng)
        hom_card = hom @ _card_on_plane(cx, cy, angle)
        alpha = _warp(_CARD_ALPHA, hom_card)
        if page is None and rng.random() < 0.5:      # a drop shadow on what lies under the card
            sh = cv2.GaussianBlur(alpha, (0, 0), rng.uniform(1.5, 5))
            sh = cv2.warpAffine(sh, np.float32([[1, 0, rng.integers(-5, 6)], [0, 1, rng.integers(-5, 6)]]), (w, h))
            canvas *= (1 - rng.uniform(0.15, 0.4) * sh)[..., None]
        _paint(canvas, _warp(face.astype(np.float32), hom_card), alpha)
        owner[alpha >= 0.5] = len(quads)
        quads.append(_apply(hom_card, CARD_OUTLINE))
        r = rng.random()
        if page is None and r < style.sleeve + style.toploader:
            _sleeve(rng, canvas, hom_card, toploader=r >= style.sleeve)
    if pockets is not None:
        _seams(rng, canvas, hom, pockets)
        _glare(rng, canvas, _warp(np.ones(page.shape[:2], np.float32), hom))
    elif rng.random() < style.glare:
        _glare(rng, canvas, (owner >= 0).astype(np.float32))
    if style.skin is not None:
        skin = style.skin(rng)
        if kind == "hand_fan":
            pivot = _apply(hom, np.array([[0.0, 0.0]]))[0]
            top = _apply(hom, np.array([[0.0, -CARD_H]]))[0]
            _hand_over(rng, canvas, occluder, pivot, top, float(np.linalg.norm(quads[0][1] - quads[0][0])), skin)
        elif rng.random() < style.hands:
            from synthetic.v2 import _hand_from_border
            _hand_from_border(rng, canvas, occluder, skin)
    in_sight = (owner >= 0) & (occluder < 0.5)
    mask = np.where(in_sight, 255, 0).astype(np.uint8)
    corners, states = [], []
    for k, quad in enumerate(quads):
        area = max(cv2.contourArea(quad.astype(np.float32)), 1.0)
        seen = float(np.count_nonzero(owner[in_sight] == k))
        # The share in sight of the card's area, within the frame and beyond it (a card half out of the
        # frame is half seen, as one half hidden under another card is).
        if seen / area < MIN_VISIBLE_FRACTION:
            continue
        ordered = order_corners(quad)
        st = []
        for x, y in ordered:
            xi, yi = int(round(x)), int(round(y))
            if not (-0.5 <= x < w - 0.5 and -0.5 <= y < h - 0.5):
                st.append(OUTSIDE)
            elif occluder[yi, xi] >= 0.5 or _covered(owner, k, xi, yi):
                st.append(HIDDEN)
            else:
                st.append(VISIBLE)
        corners.append(ordered)
        states.append(st)
    image = style.finish(rng, canvas)
    return MultiScene(image, mask, np.array(corners, np.float64).reshape(-1, 4, 2), states)


def _covered(owner: np.ndarray, k: int, x: int, y: int, radius: int = 2) -> bool:
    """True when another card lies on top of card k at its corner (x, y): the corner is just outside
    the card's rounded outline, so the pixels around it are looked at for a card painted after k."""
    h, w = owner.shape
    patch = owner[max(0, y - radius):min(h, y + radius + 1), max(0, x - radius):min(w, x + radius + 1)]
    return bool((patch > k).any())
