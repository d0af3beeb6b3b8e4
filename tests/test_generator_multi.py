"""Scenes with several cards (synthetic/multi.py, generate_dataset.py --multi-card): every layout, the
annotations as lists of quads with their states, the mask as the union of the cards in sight, and
the same output whatever the workers."""

import json
import os

import cv2
import numpy as np
import pytest

from common import DataError
from conftest import make_dataset
from synthetic import multi, scenes
from synthetic.v1 import HIDDEN, OUTSIDE, VISIBLE


def _quad_mask(quad):
    m = np.zeros((640, 480), np.uint8)
    cv2.fillPoly(m, [np.round(quad * 16).astype(np.int32)], 1, cv2.LINE_8, shift=4)
    return m.astype(bool)


@pytest.mark.parametrize("kind", list(multi.LAYOUTS))
def test_every_layout_labels_the_cards_in_sight(kind, monkeypatch):
    """Each layout, on its own: cards labelled (a fan or a pile may hide some), each labelled card at
    least partly card in the mask, corners clockwise from the smallest x + y with a state each."""
    monkeypatch.setattr(multi, "LAYOUTS", {kind: 1.0})
    style = scenes.multi_style("v2", [], None)
    labelled = []
    for seed in range(3):
        s = multi.render_multi_scene(np.random.default_rng([11, seed]), style)
        assert s.image.shape == (640, 480, 3) and s.mask.dtype == np.uint8 and set(np.unique(s.mask)) <= {0, 255}
        assert len(s.corners) == len(s.states) >= 1
        labelled.append(len(s.corners))
        for quad, states in zip(s.corners, s.states):
            assert len(states) == 4 and set(states) <= {OUTSIDE, HIDDEN, VISIBLE}
            a, b = quad[1] - quad[0], quad[2] - quad[1]
            assert np.argmin(quad.sum(1)) == 0 and a[0] * b[1] - a[1] * b[0] > 0, "clockwise on screen"
            inside = _quad_mask(quad)
            if inside.any():
                assert (s.mask[inside] > 0).mean() >= 0.3, "a labelled card is mostly card in the mask"
    if kind in ("grid", "binder"):
        assert max(labelled) >= 4


def test_multi_card_dataset_lists_quads_and_states_and_is_the_same_whatever_the_workers(tmp_path):
    digests = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        make_dataset(out, 6, 2, seed=3, workers=workers, preset="v2", extra=["--multi-card", "1"])
        with open(out / "corner_annotations.json", "rb") as f:
            digests.append(f.read())
    assert digests[0] == digests[1]
    ann = json.loads(digests[0])
    with open(tmp_path / "w1" / "corner_visibility.json") as f:
        vis = json.load(f)
    cards, images = 0, 0
    for split in ("train", "test"):
        for name, entry in ann[split].items():
            quads = np.asarray(entry)
            assert quads.ndim == 3 and quads.shape[1:] == (4, 2), name       # a list of quads, even of one
            assert np.asarray(vis[split][name]).shape == (len(quads), 4)
            assert name.startswith("cards_")
            cards += len(quads)
            images += 1
    # Several cards per card frame on average (a frame may keep one label when its others are mostly
    # out of sight or hidden).
    assert images and cards >= 2 * images


def test_multi_card_share_is_the_presets_and_zero_keeps_single_card_frames():
    """The presets' defaults (v1 none: image for image), and a share of 0 renders the very frames of
    the single-card generator; 1 renders several cards on every card frame."""
    assert scenes.default_multi_fraction("v1") == 0.0
    assert 0.1 < scenes.default_multi_fraction("v2") < 0.5 and 0.1 < scenes.default_multi_fraction("hard") < 0.5
    for i in range(6):
        single = scenes.render_frame(2, "train", i, "v2", multi_fraction=0)
        assert not single.multi and len(single.corners) <= 1
        several = scenes.render_frame(2, "train", i, "v2", multi_fraction=1)
        assert several.multi == (not single.negative)
        if single.negative:   # card-free frames are drawn first, from the same stream
            np.testing.assert_array_equal(several.image, single.image)


def test_multi_card_share_outside_zero_to_one_is_refused(tmp_path):
    import generate_dataset

    with pytest.raises(DataError, match="--multi-card must be between 0 and 1"):
        generate_dataset.main(generate_dataset.get_args_parser().parse_args(
            ["--output", str(tmp_path / "out"), "--num-train", "1", "--num-test", "0", "--quiet", "--multi-card", "2"]))
    assert not os.path.exists(tmp_path / "out" / "corner_annotations.json")


def test_a_card_under_another_has_its_covered_corners_hidden():
    """A pile: where a card lies on another's corner, that corner is hidden (state 1) though its pixel
    is card in the mask (the card on top)."""
    style = scenes.multi_style("v2", [], None)
    hidden_under_card = 0
    for seed in range(12):
        s = multi.render_multi_scene(np.random.default_rng([5, seed]), style)
        for quad, states in zip(s.corners, s.states):
            for (x, y), st in zip(quad, states):
                xi, yi = int(round(x)), int(round(y))
                if st == HIDDEN and 0 <= xi < 480 and 0 <= yi < 640 and s.mask[yi, xi]:
                    hidden_under_card += 1
    assert hidden_under_card >= 3
