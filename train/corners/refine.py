"""Corner refinement: a small CNN that moves each YOLO corner onto the card's edges, says whether it
can see the corner, and, where it cannot, puts the corner where the card's two edges meet.

Why a second stage: YOLO-pose regresses every corner from the one anchor that found the card,
so a large card's corners are offsets of 150-300 px from a stride-16/32 cell, and the last few
pixels are the hardest part of that regression. A corner is a local pattern, two straight edges
meeting, which a small network looking at crops centred on the guess (a coarse one, then a finer
one) pins down to about a pixel. People hold cards by the corners, though: under a thumb there is
no corner to see, and a refiner trained on clean corners snaps onto the thumb's outline. So the
network also answers "is the corner itself in sight?" (a visibility logit), and the same network
locates the card's edges in crops along each side. A hidden corner is where its two straight
edges meet (a card is a convex quadrilateral), and the edges' visible parts are far from the
thumb.

Geometry (continuous pixel coordinates, as the detector's output: the image spans 0..W x 0..H):
  - each crop is rotated so the card lies towards the crop's bottom right for a corner (TL as is,
    TR turned a quarter, ...), and below a horizontal edge through the crop centre for an edge
    point: one network serves all of them;
  - a crop has a spacing s (image px per crop px): crop pixel (i, j) samples the image at
    centre + s * R @ (j - 15.5, i - 15.5) (bilinear, zero outside the image), R mapping crop offsets
    to image offsets. A corner's first look is coarse (s = 2: 64 x 64 image px at half resolution),
    its second finer (s = 1.5: 48 x 48 px); edge points are looked at coarse;
  - the network returns the corner's offset from the crop centre in crop pixels (soft-argmax over an
    8 x 8 heat map, so sub-pixel and at most CROP_PX / 2 away; for an edge crop only y counts, the
    edge's distance below the centre); image offset = s * R @ that.
The same code builds the training crops, runs in Python evaluation and is exported inside
card_corners.onnx, so training and deployment sample the image identically.
"""

from __future__ import annotations

import logging
import math
import os

import torch
import torch.nn.functional as F
from torch import nn

from common import TRAIN_DIR, DataError
from corners.metrics import central_index, decode_cards_tensor, pick

logger = logging.getLogger(__name__)

# The committed refiner (trained on the synthetic dataset): the default of evaluation and export.
DEFAULT_REFINER = os.path.join(TRAIN_DIR, "checkpoints", "card_corner_refiner.pt")
CROP_PX = 32
# Crop rotation per corner (TL, TR, BR, BL), degrees, y down: the card extends to +x and +y of
# the crop for every corner.
ROTATION_DEG = (0.0, 90.0, 180.0, 270.0)
HEATMAP = 8    # heat-map cells per side: 4 crop pixels each, refined below a pixel by soft-argmax
# Two looks at each corner, image px per crop px: the first, coarse, reaches 32 px and brings a
# corner the detector put 15-25 px off near the middle of the crop; the second pins it down. Both
# 32 x 32 crop px: a quarter of the pixels of two full-resolution 64 px looks, which is what keeps
# the stage near a tenth of the detector's time (docs/experiments.md). Not at full resolution: a
# 32 px window on a card's rounded corner shows too little of its straight edges to extrapolate
# them (from the true corners of the clean unseen split, a look at s = 1 was off by 1.22 px in
# the median, no better than the coarse look's 1.23 px; the 64 px refiner's look, by 0.81 px).
# Corners the detector puts up to 16 px outside the image are still refined: the coarse crop
# reaches 32 px, so a true corner near the border is in it.
LOOK_SPACING = (2.0, 1.5)
REFINE_STEPS = len(LOOK_SPACING)
OUTSIDE_MARGIN_PX = 16.0
# Edge points are looked at once, coarse: the sides of a quad whose hidden corner was refined onto
# a thumb can be 20 px off, and a fine crop (16 px reach) lost a tenth of the hidden corners within
# 20 px of the hard split.
EDGE_SPACING = 2.0
# Where along each side (fractions from its first corner, clockwise) the network looks for the
# edge: three points, so one finger across a side still leaves two to fit its line.
EDGE_FRACTIONS = (0.25, 0.5, 0.75)
# Below this visibility the corner is taken as hidden and replaced by its sides' meeting point.
# Chosen on the refiner's validation split (v2 + hard + v1, corners within 5 px with a hard switch,
# 64 px refiner: 0.5 -> 84.8 %, 0.7 -> 85.5 %, 0.8 -> 85.8 %, 0.9 -> 85.6 %): the sides' meeting
# point is the better guess for a corner the network is even a little unsure of. Checked again for
# the 32 px refiner, with the ramp, on the 300 test images of its mix (1074 corners in the frame):
# 0.6 -> 88.8 %, 0.7 -> 88.9 %, 0.8 -> 89.1 %, 0.9 -> 89.3 %, 0.8 and 0.9 two corners apart, so it
# stayed. The switch is a ramp of +-VISIBLE_RAMP around it (the meeting point's weight goes 1 -> 0
# as visibility goes 0.7 -> 0.9): a hard switch jumps by the two guesses' distance when visibility
# crosses it, from one video frame to the next or between the FP16 and FP32 graphs.
VISIBLE_THRESHOLD = 0.8
VISIBLE_RAMP = 0.1
# An edge point's weight in its side's line: its visibility mapped so that a point the network
# calls hidden (below EDGE_WEIGHT_RAMP[0]) counts nothing and one it is sure of (above [1]) fully;
# otherwise two points' sigmoid tails would let a hidden point on a thumb's outline tilt the line.
EDGE_WEIGHT_RAMP = (0.3, 0.7)
# A side's line needs this much weight (about two points in sight) to be trusted.
MIN_EDGE_WEIGHT = 1.5
# Two lines meeting at under asin(0.25) = 14 degrees intersect too unstably to place a corner.
MIN_EDGE_SINE = 0.25
# The intersection must stay this close to the refined corner: further, a side was mislocated.
MAX_FALLBACK_SHIFT_PX = 60.0
# A quad is a card when its area is at least this share of the frame, its angles stay within
# 20 degrees of a straight line (|cos| below cos 20), and its mean long side is at most this many
# times its mean short side (5:7 is 1.4; steep perspective stretches it, a sliver is not a card).
MIN_AREA_FRACTION = 0.004
MAX_ABS_COS = math.cos(math.radians(20.0))
MAX_ASPECT = 3.0


def rotations(dtype=torch.float32, device=None) -> torch.Tensor:
    """(4, 2, 2) R_k: crop offset (x, y) -> image offset, per corner."""
    rad = torch.tensor([math.radians(d) for d in ROTATION_DEG], dtype=torch.float64)
    c, s = torch.cos(rad).round(decimals=12), torch.sin(rad).round(decimals=12)
    return torch.stack([torch.stack([c, -s], -1), torch.stack([s, c], -1)], -2).to(dtype=dtype, device=device)


def crop_offsets(dtype=torch.float32, device=None) -> torch.Tensor:
    """(CROP_PX * CROP_PX, 2) crop pixel centres (x, y) relative to the crop centre, row-major."""
    u = torch.arange(CROP_PX, dtype=dtype, device=device) - (CROP_PX - 1) / 2
    gy, gx = torch.meshgrid(u, u, indexing="ij")
    return torch.stack([gx, gy], -1).reshape(-1, 2)


def extract_crops(images: torch.Tensor, centres: torch.Tensor, rot: torch.Tensor, spacing=1.0) -> torch.Tensor:
    """images (B, 3, H, W) float, or (1, 3, H, W) shared by every row of centres; centres (B, K, 2)
    continuous px; rot (K, 2, 2) or (B, K, 2, 2); spacing: image px per crop px, a number or (K,) /
    (B, K) per crop -> crops (B * K, 3, CROP_PX, CROP_PX), row b's K crops consecutive."""
    b, k = centres.shape[:2]
    h, w = images.shape[-2:]
    shared = images.shape[0] == 1 and b != 1      # several cards' quads on one image
    # grid_sample with align_corners=False: -1 and 1 are the outer edges of the image, exactly
    # continuous 0 and W (H). One affine map per crop, crop offset (x, y, 1) -> that normalised
    # position, (2 / size) * (centre + s * R @ offset) - 1, built on the small (B, K, 2, 3) tensors:
    # the per-pixel work is then one MatMul, where element-wise ops over every crop pixel cost
    # onnxruntime about as much as the sampling.
    scale = torch.tensor([2.0 / w, 2.0 / h], dtype=images.dtype, device=images.device)
    s = torch.as_tensor(spacing, dtype=images.dtype, device=images.device).expand(b, k)
    linear = rot.expand(b, k, 2, 2) * s[..., None, None] * scale[:, None]
    affine = torch.cat([linear, (centres * scale - 1)[..., None]], -1)                 # (B, K, 2, 3)
    offsets = crop_offsets(images.dtype, images.device)
    offsets = torch.cat([offsets, torch.ones_like(offsets[:, :1])], -1)               # (P, 3)
    grid = offsets @ affine.transpose(-1, -2)                                        # (B, K, P, 2)
    if shared:   # one image: every row's crops stacked along its height, (1, 3, B * K * CROP, CROP)
        crops = F.grid_sample(images, grid.reshape(1, -1, CROP_PX, 2), mode="bilinear", padding_mode="zeros",
                              align_corners=False)
        return crops.reshape(3, -1, CROP_PX, CROP_PX).transpose(0, 1)
    crops = F.grid_sample(images, grid.reshape(b, k * CROP_PX, CROP_PX, 2), mode="bilinear", padding_mode="zeros",
                          align_corners=False)
    # (B, 3, K * CROP, CROP) -> (B * K, 3, CROP, CROP)
    return crops.reshape(b, 3, k, CROP_PX, CROP_PX).transpose(1, 2).reshape(b * k, 3, CROP_PX, CROP_PX)


def _cbr(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, dilation, dilation, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class CornerRefiner(nn.Module):
    """(N, 3, 32, 32) RGB 0..1 crops -> (N, 2) corner (or edge) offset from the crop centre in crop
    pixels, and (N,) the logit that the corner (edge point) nearest the centre is in sight.

    32 -> 16 -> 8 -> 4 px with dilated 4x4 convolutions (receptive field over the whole crop, so
    it sees both edges), the 4x4 map upsampled onto the 8x8 one, one logit per 8x8 cell, and
    the expectation of the cell centres under their softmax. Visibility reads the central 4 x 4
    cells (16 crop px: 32 image px on a coarse look) of the same features: the question is about
    the centre, not the whole crop.
    About 99 k parameters, 4.7 M multiply-adds per crop.
    """

    def __init__(self):
        super().__init__()
        self.stem = nn.Sequential(_cbr(3, 16), _cbr(16, 24, 2))                               # 16 x 16
        self.mid = nn.Sequential(_cbr(24, 32, 2), _cbr(32, 32))                              # 8 x 8
        self.deep = nn.Sequential(_cbr(32, 48, 2), _cbr(48, 48, 1, 1), _cbr(48, 48, 1, 2))   # 4 x 4
        self.head = nn.Sequential(_cbr(48 + 32, 32), nn.Conv2d(32, 1, 1))
        self.visible = nn.Linear(32, 1)
        cell = CROP_PX / HEATMAP
        self.register_buffer("cells", (torch.arange(HEATMAP) + 0.5) * cell - CROP_PX / 2, persistent=False)

    def forward(self, crops: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        mid = self.mid(self.stem(crops))
        deep = F.interpolate(self.deep(mid), scale_factor=2.0, mode="bilinear", align_corners=False)
        feat = self.head[0](torch.cat([deep, mid], 1))                             # (N, 32, 8, 8)
        logits = self.head[1](feat).flatten(1).float()                             # (N, 8 * 8)
        prob = logits.softmax(-1).view(-1, HEATMAP, HEATMAP)                       # rows = y, columns = x
        x = (prob.sum(1) * self.cells).sum(-1)
        y = (prob.sum(2) * self.cells).sum(-1)
        c = HEATMAP // 2
        visible = self.visible(feat[:, :, c - 2:c + 2, c - 2:c + 2].mean((2, 3))).squeeze(-1).float()   # (N,)
        return torch.stack([x, y], -1), visible


def _cross(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """z of the 2-D cross product, (..., 2) x (..., 2) -> (...); > 0 turns clockwise on screen (y down)."""
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


NEXT = [1, 2, 3, 0]    # corner k's clockwise neighbour; side k runs from corner k to corner NEXT[k]
PREV = [3, 0, 1, 2]


def refine_corners(refiner: CornerRefiner, images: torch.Tensor, corners: torch.Tensor,
                   looks: tuple[float, ...] = LOOK_SPACING, margin: float = OUTSIDE_MARGIN_PX
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """images (B, 3, H, W) RGB 0..1; corners (B, 4, 2) continuous px -> refined (B, 4, 2) and the
    probability (B, 4) that each refined corner is in sight.

    One look per entry of `looks` (its crop spacing), each from the previous answer. A corner the
    detector puts more than `margin` px outside the image is returned unchanged with visibility 0:
    the card runs out of the frame there, and a crop of mostly padding has no corner to find."""
    b, k = corners.shape[:2]
    h, w = images.shape[-2:]
    rot = rotations(images.dtype, images.device)
    moved = corners
    visible = torch.zeros(b, k, dtype=corners.dtype, device=corners.device)
    for spacing in looks:
        crops = extract_crops(images, moved.to(images.dtype), rot, spacing)
        offset, logit = refiner(crops)
        step = spacing * offset.view(b, k, 2).to(corners.dtype)
        moved = moved + (rot.to(corners.dtype) @ step[..., None])[..., 0]
        visible = logit.view(b, k).sigmoid().to(corners.dtype)
    x, y = corners[..., 0], corners[..., 1]
    inside = (x >= -margin) & (x <= w + margin) & (y >= -margin) & (y <= h + margin)
    return torch.where(inside[..., None], moved, corners), torch.where(inside, visible, torch.zeros_like(visible))


def edge_frames(quad: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """quad (B, 4, 2) clockwise on screen -> edge points (B, 4, T, 2) at EDGE_FRACTIONS of each side
    and their crop rotations (B, 4, 2, 2): columns u (along the side, towards the next corner) and
    v (its normal into the card), so the side is horizontal in the crop with the card below."""
    d = quad[:, NEXT] - quad                                                      # (B, 4, 2)
    u = d / torch.linalg.norm(d, dim=-1, keepdim=True).clamp(min=1e-6)
    v = torch.stack([-u[..., 1], u[..., 0]], -1)
    t = torch.tensor(EDGE_FRACTIONS, dtype=quad.dtype, device=quad.device)
    points = quad[:, :, None, :] + t[None, None, :, None] * d[:, :, None, :]
    return points, torch.stack([u, v], -1)


def locate_edges(refiner: CornerRefiner, images: torch.Tensor, quad: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The card's four sides near the quad's: per side a line (point (B, 4, 2), unit direction
    (B, 4, 2)) fitted to the edge points the refiner found, weighted by their visibility (through
    EDGE_WEIGHT_RAMP), and that weight's total (B, 4), which says how much of the side was seen."""
    b = quad.shape[0]
    points, rot = edge_frames(quad)                                               # (B, 4, T, 2), (B, 4, 2, 2)
    n = points.shape[2]
    crop_rot = rot[:, :, None].expand(b, 4, n, 2, 2).reshape(b, 4 * n, 2, 2)
    crops = extract_crops(images, points.reshape(b, 4 * n, 2).to(images.dtype), crop_rot.to(images.dtype),
                          EDGE_SPACING)
    offset, logit = refiner(crops)
    # Only y counts for an edge crop: how far below the crop centre the edge runs.
    dist = EDGE_SPACING * offset[:, 1].view(b, 4, n).to(quad.dtype)
    lo, hi = EDGE_WEIGHT_RAMP
    weight = ((logit.view(b, 4, n).sigmoid().to(quad.dtype) - lo) / (hi - lo)).clamp(0, 1)
    u, v = rot[..., 0], rot[..., 1]                                               # (B, 4, 2)
    mid = (quad + quad[:, NEXT]) / 2
    # Edge points in the side's own frame around its midpoint: s along, o across (= the found edge).
    s = ((points - mid[:, :, None]) * u[:, :, None]).sum(-1)                    # (B, 4, T)
    o = ((points - mid[:, :, None]) * v[:, :, None]).sum(-1) + dist
    # Weighted least squares o = alpha + beta * s; a side seen at one point only keeps its slope.
    sw, ssw, s2w = weight.sum(-1), (weight * s).sum(-1), (weight * s * s).sum(-1)
    ow, sow = (weight * o).sum(-1), (weight * s * o).sum(-1)
    det = sw * s2w - ssw * ssw
    spread = det > 1e-3 * (sw * s2w).clamp(min=1e-9)
    beta = torch.where(spread, (sw * sow - ssw * ow) / torch.where(spread, det, torch.ones_like(det)),
                       torch.zeros_like(det))
    alpha = (ow - beta * ssw) / sw.clamp(min=1e-9)
    direction = u + beta[..., None] * v
    direction = direction / torch.linalg.norm(direction, dim=-1, keepdim=True).clamp(min=1e-9)
    return mid + alpha[..., None] * v, direction, sw


def intersect_sides(point: torch.Tensor, direction: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Side lines (B, 4, 2) each -> corner k at the meeting of sides PREV[k] and k (B, 4, 2), and
    the sine (B, 4) of the angle between them (0 = parallel, no stable meeting point)."""
    p1, d1 = point[:, PREV], direction[:, PREV]
    p2, d2 = point, direction
    sine = _cross(d1, d2)
    safe = torch.where(sine.abs() > 1e-6, sine, torch.ones_like(sine))
    t = _cross(p2 - p1, d2) / safe
    return p1 + t[..., None] * d1, sine


def canonical_index(quad: torch.Tensor) -> torch.Tensor:
    """(B, 4, 2) in any order -> (B, 4) indices that put it clockwise on screen around the centroid,
    starting at the smallest x + y: the order of corner_annotations.json (corners/data.canonical_order).
    Untangles a self-intersecting quad (two corners swapped) and leaves a good one as it was.
    The angle is a pseudo-angle (monotonic in atan2, no trigonometry: plain ONNX operators)."""
    rel = quad - quad.mean(1, keepdim=True)
    dx, dy = rel[..., 0], rel[..., 1]
    r = dx / (dx.abs() + dy.abs()).clamp(min=1e-9)
    angle = torch.where(dy >= 0, 1 - r, 3 + r)                                   # 0..4, clockwise from +x
    order = torch.argsort(angle, dim=1)                                          # (B, 4)
    ordered = torch.gather(quad, 1, order[..., None].expand(-1, -1, 2))
    first = (ordered[..., 0] + ordered[..., 1]).argmin(1)                        # (B,)
    return torch.gather(order, 1, (first[:, None] + torch.arange(4, device=quad.device)[None]) % 4)


def take(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Per-corner data (B, 4) or (B, 4, 2) in the order of index (B, 4)."""
    if x.dim() == 3:
        return torch.gather(x, 1, index[..., None].expand(-1, -1, x.shape[-1]))
    return torch.gather(x, 1, index)


def quad_is_card(quad: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """(B, 4, 2) clockwise -> (B,) bool: convex (every turn clockwise), at least MIN_AREA_FRACTION
    of the frame, no angle within 20 degrees of flat or of folding back, and not a sliver."""
    e = quad[:, NEXT] - quad                                                      # side k: corner k -> k + 1
    turn = _cross(e[:, PREV], e)                                                  # at corner k, (B, 4)
    convex = (turn > 0).all(1)
    area = 0.5 * _cross(quad, quad[:, NEXT]).sum(1)
    length = torch.linalg.norm(e, dim=-1).clamp(min=1e-9)
    cos = -(e[:, PREV] * e).sum(-1) / (length[:, PREV] * length)
    pair_a, pair_b = (length[:, 0] + length[:, 2]) / 2, (length[:, 1] + length[:, 3]) / 2
    aspect = torch.maximum(pair_a, pair_b) / torch.minimum(pair_a, pair_b)
    return (convex & (area >= MIN_AREA_FRACTION * width * height) & (cos.abs() < MAX_ABS_COS).all(1)
            & (aspect <= MAX_ASPECT))


def repair_quad(quad: torch.Tensor, meet: torch.Tensor, use_meet: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 4, 2) quads -> the same with a reflex corner (a turn the wrong way: one corner inside the
    triangle of the other three, which no card shows) replaced, and (B, 4) bool which were.
    The replacement is its sides' meeting point `meet` (B, 4, 2) where use_meet (B, 4) says it is
    trustworthy and the corner is not already there, else the parallelogram's fourth corner from
    its neighbours (A + B - opposite): near a hidden corner under mild perspective. A mask, not a
    NaN marker: WebGPU shaders may assume floats are finite."""
    e = quad[:, NEXT] - quad
    reflex = _cross(e[:, PREV], e) <= 0                                          # (B, 4)
    parallelogram = quad[:, PREV] + quad[:, NEXT] - quad[:, [2, 3, 0, 1]]
    fix = torch.where(use_meet[..., None], meet, parallelogram)
    return torch.where(reflex[..., None], fix, quad), reflex


def finish_corners(refiner: CornerRefiner, images: torch.Tensor, corners: torch.Tensor, score: torch.Tensor
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """The detector's corners (B, 4, 2) continuous px and score (B,) -> final corners, score (0
    for a quad that is not a card), each corner's visibility (B, 4) and the weight (B, 4) 0..1 of
    its sides' meeting point in it (1: replaced, 0: the refined corner).

    1. refine each corner (two looks) and judge whether it is in sight;
    2. fit each side's line to the edge points found along it (their visibility as weights);
    3. a hidden corner (visibility below VISIBLE_THRESHOLD, on a ramp; a corner outside the frame
       included) moves to where its two sides meet, when both sides were seen, they are not
       near-parallel and the point is within MAX_FALLBACK_SHIFT_PX of the refined corner;
    4. put the quad in the annotations' order (untangles swapped corners), replace a reflex corner
       (its fallback weight then reads 1), and set the score to 0 unless the result is a plausible
       card (quad_is_card).
    The ramp keeps a corner from jumping when its visibility crosses the threshold; the other
    conditions (sides seen, angle, distance) are plain switches, rarely near their limits."""
    h, w = images.shape[-2:]
    refined, visible = refine_corners(refiner, images, corners)
    order = canonical_index(refined)
    refined, visible = take(refined, order), take(visible, order)
    point, direction, seen = locate_edges(refiner, images, refined)
    meet, sine = intersect_sides(point, direction)
    ok = ((seen[:, PREV] >= MIN_EDGE_WEIGHT) & (seen >= MIN_EDGE_WEIGHT) & (sine.abs() >= MIN_EDGE_SINE)
          & (torch.linalg.norm(meet - refined, dim=-1) <= MAX_FALLBACK_SHIFT_PX))
    ramp = ((VISIBLE_THRESHOLD + VISIBLE_RAMP - visible) / (2 * VISIBLE_RAMP)).clamp(0, 1)
    fallback = torch.where(ok, ramp, torch.zeros_like(ramp))                       # (B, 4) 0..1
    quad = torch.where(ok[..., None], fallback[..., None] * meet + (1 - fallback[..., None]) * refined, refined)
    order = canonical_index(quad)
    quad, meet, ok = take(quad, order), take(meet, order), take(ok.long(), order) > 0
    visible, fallback = take(visible, order), take(fallback, order)
    # A corner already moved to its meeting point cannot be repaired by moving it there again.
    quad, repaired = repair_quad(quad, meet, ok & (fallback <= 0))
    fallback = torch.where(repaired, torch.ones_like(fallback), fallback)
    score = torch.where(quad_is_card(quad, w, h), score, torch.zeros_like(score))
    return quad, score, visible, fallback


class DecodeAndRefine(nn.Module):
    """The post-processing stage inside card_corners.onnx: the detector's raw output -> every card
    (the detector's corners, best first) and the frame's card (corners/metrics.central_index)
    refined. images (1, 3, 640, 480), output0 (1, 17, 6300) -> corners (1, 4, 2) continuous px,
    score (1,), visibility (1, 4), fallback (1, 4) (finish_corners says what each is), cards
    (1, MAX_CARDS, 4, 2) continuous px and card_scores (1, MAX_CARDS) (0: an empty slot)."""

    def __init__(self, refiner: CornerRefiner):
        super().__init__()
        self.refiner = refiner

    def forward(self, images: torch.Tensor, output0: torch.Tensor):
        cards, scores = decode_cards_tensor(output0)
        corners, score = pick(cards, scores, central_index(cards, scores, images.shape[-1], images.shape[-2]))
        return (*finish_corners(self.refiner, images, corners, score), cards, scores)


class RefineQuads(nn.Module):
    """card_corners_refiner.onnx: any quads on one frame refined, as card_corners.onnx refines its card.
    images (1, 3, 640, 480), quads (N, 4, 2) continuous px (the graph's `cards`, or the corners of
    an earlier frame) -> corners (N, 4, 2), valid (N,) 1 where the result is a card's shape
    (quad_is_card) else 0, visibility (N, 4), fallback (N, 4)."""

    def __init__(self, refiner: CornerRefiner):
        super().__init__()
        self.refiner = refiner

    def forward(self, images: torch.Tensor, quads: torch.Tensor):
        ones = torch.ones(quads.shape[0], dtype=quads.dtype, device=quads.device)
        corners, valid, visibility, fallback = finish_corners(self.refiner, images, quads, ones)
        return corners, valid, visibility, fallback


def refiner_geometry() -> dict:
    """How this code crops for the refiner, as its checkpoints record it: weights trained on other
    crops (the 64 px full-resolution looks before) point at the wrong place on these."""
    return {"crop_px": CROP_PX, "look_spacing": list(LOOK_SPACING), "edge_spacing": EDGE_SPACING}


def checkpoint_geometry(ckpt: dict) -> dict:
    """The crops a refiner checkpoint (best.pt or last.pt) was trained on, keyed as refiner_geometry();
    None for what a checkpoint from before the record lacks."""
    return {k: ckpt.get(k) for k in refiner_geometry()}


def load_refiner(path: str, device: str | torch.device = "cpu", finetune: bool = False) -> CornerRefiner:
    """A CornerRefiner in eval mode from train_corner_refiner.py's checkpoint, or a DataError.
    finetune: also a refiner from before the visibility head (it starts fresh) or trained on other
    crops (the convolutions fit any crop size): a start for train_corner_refiner.py --weights."""
    if not os.path.isfile(path):
        raise DataError(f"{path} does not exist")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
        saved = checkpoint_geometry(ckpt)
        if saved != refiner_geometry() and not finetune:
            raise DataError(f"{path}: a refiner trained on other crops ({saved}; this code crops "
                            f"{refiner_geometry()}); it can only start a fine-tune (train_corner_refiner.py --weights)")
        if saved != refiner_geometry():
            logger.warning("%s was trained on other crops (%s; this code crops %s): its weights are a start for "
                           "the fine-tune, not a refiner for these crops", path, saved, refiner_geometry())
        model = CornerRefiner()
        missing, unexpected = model.load_state_dict(ckpt["model"], strict=False)
        only_new_head = finetune and all(k.startswith("visible.") for k in missing)
        if unexpected or (missing and not only_new_head):
            raise DataError(f"{path}: weights do not fit this refiner (missing {missing[:3]}, unexpected "
                            f"{unexpected[:3]}); a refiner from before the visibility head can only start "
                            "a fine-tune (train_corner_refiner.py --weights)")
    except DataError:
        raise
    except Exception as e:   # not a refiner checkpoint: say so instead of a torch traceback
        raise DataError(f"{path}: not a corner refiner checkpoint ({type(e).__name__}: {e})") from None
    return model.to(device).eval()
