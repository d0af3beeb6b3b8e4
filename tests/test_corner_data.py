"""Corner annotations -> Ultralytics pose dataset: labels, negatives, clipped corners, the cache,
and the errors that name a bad file or key."""

import json
import os

import numpy as np
import pytest

from common import DataError
from conftest import CARD, write_dataset
from corners.data import (
    FLIP_IDX,
    KPT_SHAPE,
    METRIC_OKS_SIGMA,
    build_pose_dataset,
    canonical_order,
    corner_samples,
    corner_states,
    label_line,
    load_corner_annotations,
)


def _labels(yaml_path, split="train"):
    root = os.path.dirname(yaml_path)
    out = {}
    for name in sorted(os.listdir(os.path.join(root, "labels", split))):
        with open(os.path.join(root, "labels", split, name)) as f:
            out[name] = f.read().split()
    return out


def test_conversion_writes_pose_labels_negatives_and_clipped_corners(tmp_path):
    off = CARD.copy()
    off[1] = [530.0, 100.0]          # top-right beyond the right edge
    root = write_dataset(tmp_path / "ds", {"a.jpg": CARD.tolist(), "b.jpg": off.tolist()},
                         images=["a.jpg", "b.jpg", "neg.jpg"])
    before = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)
    yaml_path = build_pose_dataset(root, str(tmp_path / "cache"))
    after = sorted(os.path.relpath(os.path.join(d, f), root) for d, _, fs in os.walk(root) for f in fs)
    assert before == after, "the user's dataset must not be written to"

    with open(yaml_path) as f:
        text = f.read()
    assert f"kpt_shape: {KPT_SHAPE}" in text and f"flip_idx: {FLIP_IDX}" in text
    assert f"kpt_oks_sigmas: {[METRIC_OKS_SIGMA] * 4}" in text
    cache = os.path.dirname(yaml_path)
    assert os.path.islink(os.path.join(cache, "images", "train", "a.jpg")), "images are linked, not copied"

    labels = _labels(yaml_path)
    assert labels["neg.txt"] == [], "an image without an entry is a background image"
    a = np.array(labels["a.txt"], float)
    assert len(a) == 1 + 4 + 12 and a[0] == 0
    kp = a[5:].reshape(4, 3)
    np.testing.assert_allclose(kp[:, 0] * 480, CARD[:, 0] + 0.5, atol=1e-3)
    np.testing.assert_allclose(kp[:, 1] * 640, CARD[:, 1] + 0.5, atol=1e-3)
    assert (kp[:, 2] == 2).all()
    b = np.array(labels["b.txt"], float)
    kb = b[5:].reshape(4, 3)
    coords = np.concatenate([b[1:5], kb[:, :2].ravel()])
    assert ((coords >= 0) & (coords <= 1)).all(), "every coordinate stays in 0..1 or Ultralytics drops the label"
    assert kb[1, 2] == 0 and kb[1, 0] == 1.0, "the out-of-frame corner is clipped to the edge with visibility 0"
    assert (kb[[0, 2, 3], 2] == 2).all()


def test_cache_is_reused_for_the_same_data_and_renewed_when_the_json_changes(tmp_path):
    root = write_dataset(tmp_path / "ds", {"a.jpg": CARD.tolist()}, images=["a.jpg"], split="test")
    first = build_pose_dataset(root, str(tmp_path / "cache"))
    assert build_pose_dataset(root, str(tmp_path / "cache")) == first
    moved = CARD + 5
    with open(os.path.join(root, "corner_annotations.json"), "w") as f:
        json.dump({"train": {"other.jpg": CARD.tolist()}, "test": {"a.jpg": moved.tolist()}}, f)
    second = build_pose_dataset(root, str(tmp_path / "cache"))
    assert second != first and os.path.isfile(first), "a running job keeps its folder"
    label = np.array(_labels(second, "test")["a.txt"], float)[5:].reshape(4, 3)
    np.testing.assert_allclose(label[:, 0] * 480, moved[:, 0] + 0.5, atol=1e-3)


def test_validation_split_without_corners_is_refused(tmp_path):
    root = write_dataset(tmp_path / "ds", {"a.jpg": CARD.tolist()}, images=["a.jpg"], other_annotated=False)
    with pytest.raises(DataError, match='"test" split has no annotated card corner'):
        build_pose_dataset(root, str(tmp_path / "cache"))


@pytest.mark.parametrize("content, expect", [
    ("{not json", "not valid JSON"),
    ('["a"]', "expected an object"),
    ('{"train": [1, 2]}', '"train" must map'),
    ('{"train": {"a.jpg": [[1, 2], [3, 4], [5, 6]]}}', '"train" -> "a.jpg": expected 4 [x, y] points (one card) '
     'or a list of them (one per card), got shape [3, 2]'),
    ('{"train": {"a.jpg": [[1, 2], [3, 4], [5, 6], [7]]}}', '"train" -> "a.jpg": expected 4'),
    ('{"train": {"a.jpg": [[[1, 2], [3, 4], [5, 6], [7, 8]], [[1, 2], [3, 4], [5, 6]]]}}', '"train" -> "a.jpg": '
     'expected 4 [x, y] points (one card) or a list of them'),
    ('{"train": {"a.jpg": {"x": 1}}}', '"train" -> "a.jpg": expected 4'),
    ('{"train": {"a.jpg": [[1, 2], [3, 4], [5, 6], ["x", 8]]}}', '"train" -> "a.jpg"'),
    ('{"train": {"a.jpg": [[1, 2], [3, 4], [5, 6], [NaN, 8]]}}', '"train" -> "a.jpg": corner coordinates must be'),
])
def test_malformed_annotations_name_the_file_and_key(tmp_path, content, expect):
    root = write_dataset(tmp_path / "ds", {}, images=["a.jpg"])
    path = os.path.join(root, "corner_annotations.json")
    with open(path, "w") as f:
        f.write(content)
    with pytest.raises(DataError) as e:
        build_pose_dataset(root, str(tmp_path / "cache"))
    assert expect in str(e.value) and "corner_annotations.json" in str(e.value)


def test_several_cards_an_empty_list_and_their_labels(tmp_path):
    """An entry may list several cards (one quad each) or none ([]); each card is one label line, in
    canonical order, and the generator's states follow the same shape."""
    second = CARD * 0.5 + 200
    root = write_dataset(tmp_path / "ds", {"two.jpg": [CARD[[2, 0, 3, 1]].tolist(), second.tolist()], "none.jpg": [],
                                           "one.jpg": CARD.tolist()}, images=["two.jpg", "none.jpg", "one.jpg"])
    samples = dict(corner_samples(root, "train"))
    two, none, one = (samples[os.path.join(root, "train", "images", n)] for n in ("two.jpg", "none.jpg", "one.jpg"))
    assert two.shape == (2, 4, 2) and none.shape == (0, 4, 2) and one.shape == (1, 4, 2)
    np.testing.assert_allclose(two[0], CARD)          # re-ordered TL, TR, BR, BL
    np.testing.assert_allclose(two[1], second)
    with open(os.path.join(root, "corner_visibility.json"), "w") as f:
        json.dump({"train": {"two.jpg": [[2, 2, 1, 2], [0, 2, 2, 2]], "one.jpg": [2, 2, 2, 1]}, "test": {}}, f)
    states = corner_states(root, "train", list(samples.items()))
    by_name = {os.path.basename(p): s for (p, _), s in zip(samples.items(), states)}
    # two.jpg's first card was given as BR, TL, BL, TR: its states follow it into TL, TR, BR, BL.
    assert by_name["two.jpg"].tolist() == [[2, 2, 2, 1], [0, 2, 2, 2]]
    assert by_name["one.jpg"].tolist() == [[2, 2, 2, 1]] and by_name["none.jpg"].shape == (0, 4)
    labels = _labels(build_pose_dataset(root, str(tmp_path / "cache")))
    assert len(labels["two.txt"]) == 2 * 17 and labels["none.txt"] == [] and len(labels["one.txt"]) == 17
    kp = np.array(labels["two.txt"], float).reshape(2, 17)[:, 5:].reshape(2, 4, 3)
    np.testing.assert_allclose(kp[1, :, 0] * 480, second[:, 0] + 0.5, atol=1e-3)


def test_entry_without_image_names_the_key(tmp_path):
    root = write_dataset(tmp_path / "ds", {"a.jpg": CARD.tolist(), "ghost.jpg": CARD.tolist()}, images=["a.jpg"])
    with pytest.raises(DataError, match=r'"train" -> "ghost.jpg" has no image'):
        corner_samples(root, "train")


def test_missing_annotation_file_is_a_clear_error(tmp_path):
    root = write_dataset(tmp_path / "ds", {}, images=["a.jpg"])
    os.remove(os.path.join(root, "corner_annotations.json"))
    with pytest.raises(DataError, match="corner_annotations.json does not exist"):
        load_corner_annotations(os.path.join(root, "corner_annotations.json"))


def test_canonical_order_and_label_box():
    shuffled = CARD[[2, 0, 3, 1]]
    np.testing.assert_allclose(canonical_order(shuffled), CARD)
    assert label_line(np.array([[-50.0, -50], [-40, -50], [-40, -40], [-50, -40]])) is None

