"""mix_datasets.py: linked mixes keep images, masks, corners and corner states together."""

import json
import os
import shutil

import pytest

from common import DataError
from conftest import make_dataset


def test_mix_links_the_first_images_of_each_source_with_their_labels(tmp_path):
    import mix_datasets
    from corners.data import corner_samples, corner_states
    from segmentation.dataset import find_samples

    make_dataset(tmp_path / "a", 6, 3, seed=1, workers=1, preset="v1")
    make_dataset(tmp_path / "b", 5, 4, seed=2, workers=1, preset="hard")
    out = tmp_path / "mix"
    result = mix_datasets.main(mix_datasets.get_args_parser().parse_args(
        [str(out), f"a={tmp_path / 'a'}:4:2", f"b={tmp_path / 'b'}"]))
    assert result["counts"] == {"a/train": 4, "a/test": 2, "b/train": 5, "b/test": 4}
    train = find_samples(str(out), "train")
    assert len(train) == 9 and all(os.path.islink(p) and os.path.islink(m) for p, m in train)
    assert os.path.basename(train[0][0]) == "a_" + os.path.basename(find_samples(str(tmp_path / "a"), "train")[0][0])
    # Corners follow their images under the new names; corner states where the source had them.
    with open(tmp_path / "b" / "corner_annotations.json") as f:
        b_corners = json.load(f)
    with open(out / "corner_annotations.json") as f:
        mixed = json.load(f)
    for name, pts in b_corners["test"].items():
        assert mixed["test"]["b_" + name] == pts
    samples = corner_samples(str(out), "test")
    states = corner_states(str(out), "test", samples)
    # One (cards, 4) array per image; both sources are generated, so every card has its states.
    assert len(samples) == len(states) == 6
    assert all(st.shape == (len(cards), 4) and set(st.ravel()) <= {0, 1, 2} for st, (_, cards) in zip(states, samples))
    with pytest.raises(DataError, match="not an empty folder"):
        mix_datasets.main(mix_datasets.get_args_parser().parse_args([str(out), f"a={tmp_path / 'a'}"]))


def test_a_count_of_zero_takes_nothing_even_from_a_missing_split(tmp_path):
    """A set of card-free training frames (no test split) joins a mix with :N:0."""
    import mix_datasets
    from segmentation.dataset import find_samples

    make_dataset(tmp_path / "neg", 3, 0, seed=4, workers=1, preset="v1", extra=["--negative-fraction", "1"])
    make_dataset(tmp_path / "a", 2, 2, seed=1, workers=1, preset="v1")
    out = tmp_path / "mix"
    result = mix_datasets.main(mix_datasets.get_args_parser().parse_args(
        [str(out), f"a={tmp_path / 'a'}", f"neg={tmp_path / 'neg'}:3:0"]))
    assert result["counts"] == {"a/train": 2, "a/test": 2, "neg/train": 3, "neg/test": 0}
    assert len(find_samples(str(out), "train")) == 5 and len(find_samples(str(out), "test")) == 2
    with open(out / "corner_annotations.json") as f:
        assert not any(k.startswith("neg_") for split in json.load(f).values() for k in split)


@pytest.mark.parametrize("source, message", [("nodir", "expected NAME=DIR"), ("a={missing}", "is not a folder"),
                                             ("a={data}:x", "whole numbers"), ("a b={data}", "plain NAME")])
def test_mix_refuses_bad_sources(tmp_path, source, message):
    import mix_datasets

    make_dataset(tmp_path / "d", 1, 1, seed=3, workers=1, preset="v1")
    source = source.format(missing=tmp_path / "nope", data=tmp_path / "d")
    with pytest.raises(DataError, match=message):
        mix_datasets.main(mix_datasets.get_args_parser().parse_args([str(tmp_path / "out"), source]))


def test_a_short_or_missing_split_is_refused_before_anything_is_linked(tmp_path):
    """Asking for more images than a source has, or for a split it lacks, or two sources whose
    links would share a name, names the source and leaves no half-made mix behind: the same
    command, corrected, then runs."""
    import mix_datasets
    from segmentation.dataset import find_samples

    make_dataset(tmp_path / "a", 3, 2, seed=1, workers=1, preset="v1")
    make_dataset(tmp_path / "neg", 2, 0, seed=4, workers=1, preset="v1", extra=["--negative-fraction", "1"])
    out = tmp_path / "mix"
    # The same image names under another source name: a_card + train_... = a + card_train_...
    stem = os.path.splitext(os.path.basename(find_samples(str(tmp_path / "a"), "train")[0][0]))[0]
    assert stem.startswith("card_")
    for sub, ext in (("images", ".jpg"), ("masks", ".png")):
        os.makedirs(tmp_path / "c" / "train" / sub)
        shutil.copy(tmp_path / "a" / "train" / sub / (stem + ext), tmp_path / "c" / "train" / sub / (stem[5:] + ext))
    refusals = ((f"neg={tmp_path / 'neg'}:2:1", r"neg: .* is missing or empty; .* test split out \(neg=DIR:N:0\)"),
                (f"neg={tmp_path / 'neg'}:5:0", "neg: asks for 5 train images but .* has 2"),
                (f"a_card={tmp_path / 'c'}:1:0", "a_card: .* would both be linked as train/images/a_" + stem))
    for bad, message in refusals:
        with pytest.raises(DataError, match=message):
            mix_datasets.main(mix_datasets.get_args_parser().parse_args([str(out), f"a={tmp_path / 'a'}", bad]))
        assert not out.exists() or not os.listdir(out)
    result = mix_datasets.main(mix_datasets.get_args_parser().parse_args(
        [str(out), f"a={tmp_path / 'a'}", f"neg={tmp_path / 'neg'}:2:0"]))
    assert result["counts"] == {"a/train": 3, "a/test": 2, "neg/train": 2, "neg/test": 0}
