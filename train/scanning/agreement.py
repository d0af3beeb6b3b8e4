"""Does a card the corner model found agree with the segmentation mask?

A quad is reported as a card only when the mask (card probability, 480x640) says so:
1. inside is card: at least MIN_FILL of a grid of points in the quad, shrunk by INNER_SHRINK
   towards its centre (the mask's edge is blurred, a finger may lie over a corner), is card;
2. no background runs across it: every interior row and column of that grid, in the card's own
   frame, is at least MIN_LINE_FILL card (two cards with a gap between them, taken as one, are not);
3. its sides run along the card's outline: just outside each side (SIDE_OFFSETS_PX) lies background,
   the frame's edge or another card the model found, on at least MIN_BOUNDED of the side (a part of
   a card, its art box say, is not a card, nor is a card with a strip of an unfound neighbour);
4. it holds no other card the model found (CONTAIN_SHARE of that card inside it): two touching
   cards taken as one quad are bounded by background all round, but the detector also finds each.

The web app runs the same rules (demo/js/agreement.js; tests/test_agreement.py checks that both
give the same answers). numpy and OpenCV only: scan.py needs no torch.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from common import MASK_THRESHOLD

INNER_SHRINK = 0.08
GRID = (15, 21)                    # points across and down the card (5:7)
MIN_FILL = 0.85
MIN_LINE_FILL = 0.5
SIDE_OFFSETS_PX = (4.0, 8.0, 12.0)
SIDE_SAMPLES = 12                  # along each side, from 15 % to 85 % of it
MIN_BOUNDED = 0.6
MIN_BOUNDED_SIDES = 4
CONTAIN_SHARE = 0.7
MIN_AREA_PX = 64.0                 # a quad smaller than 8 x 8 px, flat or crossed, is no card

UNIT_SQUARE = np.array([[0.0, 0.0], [1.0, 0.0], [1.0, 1.0], [0.0, 1.0]], np.float32)


@dataclass
class Agreement:
    fill: float                      # share of the shrunk quad's grid that is card
    min_line: float                  # the emptiest interior row or column's share of card
    sides: np.ndarray                # (4,) share of each side bounded
    contains: int                    # other cards held inside it
    ok: bool


def sample(prob: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Bilinear card probability at (N, 2) continuous px (the image spans 0..W); NaN outside the frame."""
    h, w = prob.shape
    x, y = points[:, 0] - 0.5, points[:, 1] - 0.5            # pixel-index
    inside = (x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)
    x0 = np.clip(np.floor(x), 0, w - 1).astype(np.int64)
    y0 = np.clip(np.floor(y), 0, h - 1).astype(np.int64)
    x1, y1 = np.minimum(x0 + 1, w - 1), np.minimum(y0 + 1, h - 1)
    fx, fy = np.clip(x - x0, 0, 1), np.clip(y - y0, 0, 1)
    top = prob[y0, x0] * (1 - fx) + prob[y0, x1] * fx
    bottom = prob[y1, x0] * (1 - fx) + prob[y1, x1] * fx
    return np.where(inside, top * (1 - fy) + bottom * fy, np.nan)


def inside_quad(quad: np.ndarray, points: np.ndarray) -> np.ndarray:
    """(N,) True where points (N, 2) lie inside the convex quad (4, 2), either winding."""
    edges = np.roll(quad, -1, 0) - quad                                      # (4, 2)
    rel = points[:, None] - quad[None]                                       # (N, 4, 2)
    cross = edges[None, :, 0] * rel[..., 1] - edges[None, :, 1] * rel[..., 0]
    return (cross >= 0).all(1) | (cross <= 0).all(1)


def quad_area(quad: np.ndarray) -> float:
    x, y = quad[:, 0], quad[:, 1]
    return 0.5 * abs(float(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))))


def is_card_shaped(quad: np.ndarray) -> bool:
    """Convex, not crossed, and at least MIN_AREA_PX: the only quads the rules can judge (a
    detector's empty or collapsed slot has no homography)."""
    edges = np.roll(quad, -1, 0) - quad
    turns = edges[:, 0] * np.roll(edges, -1, 0)[:, 1] - edges[:, 1] * np.roll(edges, -1, 0)[:, 0]
    return bool(np.isfinite(quad).all() and quad_area(quad) >= MIN_AREA_PX
                and ((turns > 0).all() or (turns < 0).all()))


def grid_points(quad: np.ndarray, shrink: float = INNER_SHRINK) -> np.ndarray:
    """(GRID[1], GRID[0], 2) points in the quad (TL, TR, BR, BL, continuous px), rows down the card,
    the grid spanning the quad shrunk by `shrink` of its size on each side."""
    hom = cv2.getPerspectiveTransform(UNIT_SQUARE, quad.astype(np.float32)).astype(np.float64)
    u = np.linspace(shrink, 1 - shrink, GRID[0])
    v = np.linspace(shrink, 1 - shrink, GRID[1])
    uu, vv = np.meshgrid(u, v)
    p = np.stack([uu, vv, np.ones_like(uu)], -1) @ hom.T
    return p[..., :2] / p[..., 2:]


def agreement(prob: np.ndarray, quad: np.ndarray, others: list[np.ndarray] = ()) -> Agreement:
    """The rules above for one quad (4, 2) TL, TR, BR, BL in continuous px of the 480x640 mask;
    others: the other cards the model found in the same frame."""
    if not is_card_shaped(quad):
        return Agreement(0.0, 0.0, np.zeros(4), 0, False)
    grid = grid_points(quad)
    p = sample(prob, grid.reshape(-1, 2)).reshape(grid.shape[:2])
    seen = np.isfinite(p)
    card = np.nan_to_num(p, nan=0.0) >= MASK_THRESHOLD
    fill = float(card[seen].mean()) if seen.any() else 0.0
    # Interior rows and columns, those mostly in the frame (a card running out of it is judged on
    # what is in sight).
    lines = []
    for axis in (0, 1):
        n = card.shape[1 - axis]
        for i in range(1, n - 1):
            c, s = (card[:, i], seen[:, i]) if axis == 0 else (card[i], seen[i])
            if s.mean() >= 0.5:
                lines.append(float(c[s].mean()))
    min_line = min(lines) if lines else 0.0
    centre = quad.mean(0)
    t = np.linspace(0.15, 0.85, SIDE_SAMPLES)
    sides = np.zeros(4)
    for k in range(4):
        a, b = quad[k], quad[(k + 1) % 4]
        d = b - a
        normal = np.array([d[1], -d[0]]) / max(float(np.hypot(*d)), 1e-9)
        if np.dot(normal, (a + b) / 2 - centre) < 0:
            normal = -normal                                                  # outwards
        points = a + t[:, None] * d
        bounded = np.zeros(SIDE_SAMPLES, bool)
        for off in SIDE_OFFSETS_PX:
            q = points + off * normal
            p = sample(prob, q)
            outside = ~np.isfinite(p)
            neighbour = np.zeros(SIDE_SAMPLES, bool)
            for other in others:
                neighbour |= inside_quad(other, q)
            bounded |= outside | (np.nan_to_num(p, nan=0.0) < MASK_THRESHOLD) | neighbour
        sides[k] = bounded.mean()
    area = quad_area(quad)
    contains = 0
    for other in others:
        other_area = quad_area(other)
        if other_area < 0.8 * area and is_card_shaped(other):
            held = inside_quad(quad, grid_points(other, 0.0).reshape(-1, 2)).mean()
            contains += held >= CONTAIN_SHARE
    ok = (fill >= MIN_FILL and min_line >= MIN_LINE_FILL and int((sides >= MIN_BOUNDED).sum()) >= MIN_BOUNDED_SIDES
          and contains == 0)
    return Agreement(fill, min_line, sides, contains, bool(ok))
