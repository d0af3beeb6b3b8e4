"""The exported models on one 480x640 view and on a whole photo: every card, its corners, its score
and whether the segmentation mask agrees (agreement.py). What scan.py writes out; onnxruntime,
numpy and OpenCV only.

Per view: card_segmentation.onnx gives the card probability; card_corners.onnx every card the
detector finds (`cards`, `card_scores`) and its own answer for the frame's card (`corners`,
`score`); card_corners_refiner.onnx refines every card found; agreement.py checks each against the
mask. A file without `cards` (exported before several cards existed) gives its one card. Over a
photo's views (geometry.views) the same card seen twice is kept once: the view that shows it whole,
then the one that agrees with its mask, then the closer view, then the higher score.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from common import IMAGE_HEIGHT, IMAGE_WIDTH, NO_CARD_SCORE, DataError
from onnx_utils import ort_session
from scanning.agreement import Agreement, agreement, inside_quad, quad_area
from scanning.geometry import Geometry

# The corner models' outputs (model card): corners (1, 4, 2) TL, TR, BR, BL in continuous pixels of
# the 480x640 input and the score (1,) of the frame's card; cards (1, M, 4, 2) and card_scores (1, M)
# every card found; the refiner's inputs images and quads (N, 4, 2), outputs corners and valid (N,).
CORNERS_OUTPUT, SCORE_OUTPUT = "corners", "score"
CARDS_OUTPUT, CARD_SCORES_OUTPUT = "cards", "card_scores"
QUADS_INPUT, VALID_OUTPUT = "quads", "valid"
# Two detections are the same card when every corner of one lies within this share of the card's
# size of the other's (corners/metrics.py decodes with the same idea).
SAME_CARD_SHARE = 0.15
# The graph's refined card and the same card as found (unrefined when there is no refiner graph):
# the refiner moves a corner by up to 32 px, a fifth of a small card.
GRAPH_CARD_SHARE = 0.3
EDGE_MARGIN_PX = 2.0     # a card is whole in a view when its corners lie this far inside the view


def _shape_fits(shape, expected: tuple[int, ...]) -> bool:
    """A declared ONNX shape fits when every fixed dimension equals the expected one (symbolic or
    unknown dimensions fit anything)."""
    return len(shape) == len(expected) and all(not isinstance(d, int) or d == e for d, e in zip(shape, expected))


def _describe(args) -> str:
    return ", ".join(f"{a.name} {a.type} {list(a.shape)}" for a in args) or "none"


def open_model(path: str, option: str, threads: int = 0, inputs: int = 1):
    """An onnxruntime session whose first input takes the 1x3x640x480 frame, or a DataError naming
    the file (missing, not ONNX, other inputs)."""
    if not os.path.isfile(path):
        raise DataError(f"{option} {path}: model file not found")
    try:
        sess = ort_session(path, threads)
    except Exception as e:     # onnxruntime raises its own types, with multi-line messages
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise DataError(f"{option} {path}: not a readable ONNX model ({reason})") from None
    got = sess.get_inputs()
    want = (1, 3, IMAGE_HEIGHT, IMAGE_WIDTH)
    if len(got) != inputs or got[0].type != "tensor(float)" or not _shape_fits(got[0].shape, want):
        raise DataError(f"{option} {path}: expected {'one float32 input' if inputs == 1 else 'a first input'} "
                        f"{list(want)} (RGB 0..1), found {_describe(got)}")
    return sess


@dataclass
class Card:
    """A card found in a view: quad (4, 2) TL, TR, BR, BL in continuous px of the 480x640 input."""
    quad: np.ndarray
    score: float
    agreement: Agreement

    @property
    def agrees(self) -> bool:
        return self.agreement.ok


@dataclass
class ViewResult:
    prob: np.ndarray                      # (640, 480) card probability
    cards: list[Card]                     # every card found, best score first
    central: int | None                   # the frame's card (the graph's `corners`): an index into cards


@dataclass
class PhotoCard:
    """A card of a photo: its corners (4, 2) in pixel-index coordinates of the upright original."""
    corners: np.ndarray
    score: float
    agrees: bool
    view: int
    whole: bool                           # all four corners inside the view it was found in
    scale: float                          # the view's model px per original px
    extra: dict = field(default_factory=dict)


class Scanner:
    """The models on one 480x640 frame: card probability, every card, the frame's card."""

    def __init__(self, seg_model: str, corner_model: str, threads: int = 0, refiner: str | None = None):
        self.seg = open_model(seg_model, "--seg-model", threads)
        masks = [o for o in self.seg.get_outputs()
                 if o.type == "tensor(float)" and _shape_fits(o.shape, (1, 1, IMAGE_HEIGHT, IMAGE_WIDTH))]
        if not masks:
            raise DataError(f"--seg-model {seg_model}: expected a float32 output [1, 1, {IMAGE_HEIGHT}, {IMAGE_WIDTH}] "
                            f"(card probability, as card_segmentation.onnx's `mask`), found "
                            f"{_describe(self.seg.get_outputs())}")
        self.mask_output = next((o.name for o in masks if o.name == "mask"), masks[0].name)
        self.corners = open_model(corner_model, "--corner-model", threads)
        outputs = {o.name: o for o in self.corners.get_outputs()}
        c, s = outputs.get(CORNERS_OUTPUT), outputs.get(SCORE_OUTPUT)
        if c is None or s is None or not _shape_fits(c.shape, (1, 4, 2)) or not _shape_fits(s.shape, (1,)):
            raise DataError(f"--corner-model {corner_model}: expected outputs `{CORNERS_OUTPUT}` [1, 4, 2] and "
                            f"`{SCORE_OUTPUT}` [1] (card_corners.onnx; a file exported with --no-refine has "
                            f"only `output0`), found {_describe(self.corners.get_outputs())}")
        self.multi = CARDS_OUTPUT in outputs and CARD_SCORES_OUTPUT in outputs
        self.fetch = [CORNERS_OUTPUT, SCORE_OUTPUT] + ([CARDS_OUTPUT, CARD_SCORES_OUTPUT] if self.multi else [])
        self.refiner = None
        if self.multi and refiner is not None:
            self.refiner = open_model(refiner, "--refiner-model", threads, inputs=2)
            names = [i.name for i in self.refiner.get_inputs()]
            if names[1] != QUADS_INPUT or VALID_OUTPUT not in {o.name for o in self.refiner.get_outputs()}:
                raise DataError(f"--refiner-model {refiner}: expected inputs images and `{QUADS_INPUT}` [N, 4, 2], "
                                f"outputs `{CORNERS_OUTPUT}` and `{VALID_OUTPUT}` (card_corners_refiner.onnx), found "
                                f"{_describe(self.refiner.get_inputs())} -> {_describe(self.refiner.get_outputs())}")
        self.seg_input, self.corner_input = self.seg.get_inputs()[0].name, self.corners.get_inputs()[0].name
        self.x = np.empty((1, 3, IMAGE_HEIGHT, IMAGE_WIDTH), np.float32)     # reused for every frame

    def __call__(self, frame_bgr: np.ndarray) -> ViewResult:
        """(640, 480, 3) uint8 BGR -> the view's probability and cards."""
        np.multiply(frame_bgr[..., ::-1].transpose(2, 0, 1), np.float32(1 / 255), out=self.x[0], dtype=np.float32)
        prob = self.seg.run([self.mask_output], {self.seg_input: self.x})[0][0, 0]
        out = dict(zip(self.fetch, self.corners.run(self.fetch, {self.corner_input: self.x})))
        corners, score = out[CORNERS_OUTPUT][0].astype(np.float64), float(out[SCORE_OUTPUT].reshape(-1)[0])
        if not (np.isfinite(score) and np.all(np.isfinite(corners))):
            raise ValueError("the corner model returned non-finite corners or score")
        if not self.multi:
            quads, scores = (corners[None], np.array([score])) if score >= NO_CARD_SCORE else (np.zeros((0, 4, 2)),
                                                                                                 np.zeros(0))
        else:
            found = out[CARD_SCORES_OUTPUT][0] >= NO_CARD_SCORE
            quads = out[CARDS_OUTPUT][0][found].astype(np.float64)
            scores = out[CARD_SCORES_OUTPUT][0][found].astype(np.float64)
            if self.refiner is not None and len(quads):
                refined, valid = self.refiner.run([CORNERS_OUTPUT, VALID_OUTPUT],
                                                  {self.refiner.get_inputs()[0].name: self.x,
                                                   QUADS_INPUT: quads.astype(np.float32)})
                quads, scores = refined.astype(np.float64), scores * valid
        keep = scores >= NO_CARD_SCORE
        quads, scores = quads[keep].copy(), scores[keep]
        central = None
        if score >= NO_CARD_SCORE and len(quads):
            # The graph's refined card is one of the cards found: the nearest, when it is the same card
            # (the refiner may have dropped it). Without the refiner graph it brings the refined corners,
            # before the mask judges any card.
            d = [float(np.linalg.norm(q - corners, axis=1).max()) for q in quads]
            central = int(np.argmin(d))
            if not _same_card(quads[central], corners, GRAPH_CARD_SHARE):
                central = None
            elif not self.multi or self.refiner is None:
                quads[central] = corners
        cards = [Card(q, float(s), agreement(prob, q, [o for j, o in enumerate(quads) if j != i]))
                 for i, (q, s) in enumerate(zip(quads, scores))]
        return ViewResult(prob, cards, central)


def _same_card(a: np.ndarray, b: np.ndarray, share: float = SAME_CARD_SHARE) -> bool:
    size = max(np.sqrt(quad_area(a)), np.sqrt(quad_area(b)), 1.0)
    return float(np.linalg.norm(a - b, axis=1).max()) <= share * size


def _overlap(a: np.ndarray, b: np.ndarray) -> bool:
    """True when either quad holds the other's centre."""
    return bool(inside_quad(a, b.mean(0, keepdims=True))[0] or inside_quad(b, a.mean(0, keepdims=True))[0])


def merge_views(results: list[tuple[ViewResult, Geometry]], width: int, height: int) -> list[PhotoCard]:
    """The cards of every view in the photo's pixels, each card once; a card that holds another
    (two cards found as one quad in a coarser view) is dropped."""
    found: list[PhotoCard] = []
    for v, (result, geometry) in enumerate(results):
        x0, y0, x1, y1 = geometry.region(width, height)
        for card in result.cards:
            corners = geometry.to_original(card.quad)
            inside = ((corners[:, 0] >= x0 - 0.5 + EDGE_MARGIN_PX) & (corners[:, 0] <= x1 - 0.5 - EDGE_MARGIN_PX)
                      & (corners[:, 1] >= y0 - 0.5 + EDGE_MARGIN_PX) & (corners[:, 1] <= y1 - 0.5 - EDGE_MARGIN_PX))
            found.append(PhotoCard(corners, card.score, card.agrees, v, bool(inside.all()), geometry.scale_x))
    rank = sorted(found, key=lambda c: (not c.whole, not c.agrees, -c.scale, -c.score))
    kept: list[PhotoCard] = []
    for card in rank:
        if any(_same_card(card.corners, k.corners) for k in kept):
            continue
        # A card cut by its view's edge is a guess at the part out of view: where a card kept from
        # another view overlaps it, that card is the one seen whole.
        if not card.whole and any(_overlap(card.corners, k.corners) for k in kept):
            continue
        kept.append(card)
    # A quad that holds the centres of two or more other cards spans them (a coarser view's union,
    # or the detector's quad across two neighbours): held means smaller than it, or confirmed by the
    # mask where it is not (a span over 1.2 touching cards is barely larger than either).
    out = []
    for card in kept:
        area = quad_area(card.corners)
        held = sum(1 for o in kept if o is not card and inside_quad(card.corners, o.corners.mean(0, keepdims=True))[0]
                   and (quad_area(o.corners) < 0.8 * area or (o.agrees and not card.agrees)))
        if held < 2:
            out.append(card)
    return reading_order(out)


def reading_order(cards: list[PhotoCard]) -> list[PhotoCard]:
    """Cards in rows, top to bottom, each row left to right: a card joins the row of the one
    before it when its centre lies within half a card height of that row's first card."""
    if not cards:
        return []
    centres = [c.corners.mean(0) for c in cards]
    heights = [float(np.linalg.norm(c.corners[3] - c.corners[0]) + np.linalg.norm(c.corners[2] - c.corners[1])) / 2
               for c in cards]
    order = sorted(range(len(cards)), key=lambda i: centres[i][1])
    rows: list[list[int]] = []
    for i in order:
        if rows and abs(centres[i][1] - centres[rows[-1][0]][1]) <= 0.5 * heights[rows[-1][0]]:
            rows[-1].append(i)
        else:
            rows.append([i])
    return [cards[i] for row in rows for i in sorted(row, key=lambda i: centres[i][0])]
