"""One generated frame of a preset: a card-free frame, one card (v1.py, v2.py) or several (multi.py).

Every frame comes from its own random streams, seeded by (seed, split, index) only, so the output
does not depend on the number of workers. Whether a card frame shows several cards is drawn from a
second stream, and so is the multi-card scene: with a share of 0 every frame is the one the
single-card generator made before several cards existed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synthetic import multi, v1, v2
from synthetic.photos import PhotoPool

PRESETS = ("v1", "v2", "hard")
SPLIT_IDS = {"train": 0, "test": 1}
# v1 keeps its images exactly, with one card each, so its earlier figures can be re-measured.
V1_MULTI_FRACTION = 0.0
MULTI_STREAM = 1    # the multi-card draw's stream: (seed, split, index, MULTI_STREAM)


@dataclass
class Frame:
    image: np.ndarray                    # (640, 480, 3) uint8 RGB
    mask: np.ndarray                     # (640, 480) uint8, 255 = card
    corners: np.ndarray                  # (N, 4, 2) each card's TL, TR, BR, BL, N >= 0
    states: list[list[int]]              # (N, 4) v1.OUTSIDE / HIDDEN / VISIBLE
    multi: bool                          # drawn as a multi-card scene (its JSON entry is a list of quads)

    @property
    def negative(self) -> bool:
        return len(self.corners) == 0


def default_negative_fraction(preset: str) -> float:
    """The share of card-free frames a preset draws (v1: as the users' data; v2 / hard: their Preset)."""
    return v1.NEGATIVE_FRACTION if preset == "v1" else v2.PRESETS[preset].negative


def default_multi_fraction(preset: str) -> float:
    """The share of card frames that show several cards."""
    return V1_MULTI_FRACTION if preset == "v1" else v2.PRESETS[preset].multi


def multi_style(preset: str, backgrounds: list[str], photos: PhotoPool | None) -> multi.Style:
    """The preset's look for multi-card scenes: its cards, surfaces, hands and camera."""
    if preset == "v1":
        return multi.Style(card=v1.render_card,
                           background=lambda rng: v1._background(rng, backgrounds).astype(np.float32),
                           finish=lambda rng, img: v1._camera(rng, v1._lighting(rng, img)))
    p = v2.PRESETS[preset]
    return multi.Style(card=lambda rng: v2.render_card_v2(rng, p, photos),
                       background=lambda rng: v2.scene_background(rng, p, photos),
                       finish=lambda rng, img: v2.finish(rng, p, img), skin=v2._skin, hands=p.border_hand,
                       glare=p.glare_band, touching=p.touching, outside=min(1.0, 2 * p.outside))


def render_frame(seed: int, split: str, index: int, preset: str, backgrounds: list[str] | None = None,
                 photos: PhotoPool | None = None, negative_fraction: float | None = None,
                 multi_fraction: float | None = None) -> Frame:
    """Frame `index` of `split` for `seed`; the fractions default to the preset's."""
    rng = np.random.default_rng([seed, SPLIT_IDS[split], index])
    if negative_fraction is None:
        negative_fraction = default_negative_fraction(preset)
    if multi_fraction is None:
        multi_fraction = default_multi_fraction(preset)
    negative = rng.random() < negative_fraction
    if not negative and multi_fraction > 0:
        rng_multi = np.random.default_rng([seed, SPLIT_IDS[split], index, MULTI_STREAM])
        if rng_multi.random() < multi_fraction:
            s = multi.render_multi_scene(rng_multi, multi_style(preset, backgrounds or [], photos))
            return Frame(s.image, s.mask, s.corners, s.states, True)
    if preset == "v1":
        s = v1.render_scene(rng, negative=negative, user_backgrounds=backgrounds)
    else:
        s = v2.render_scene_v2(rng, v2.PRESETS[preset], negative=negative, photos=photos)
    if s.corners is None:
        return Frame(s.image, s.mask, np.zeros((0, 4, 2)), [], False)
    return Frame(s.image, s.mask, s.corners[None], [s.states], False)
