"""compare.py: two segmentation models on the same images, with a paired bootstrap interval of the
pooled IoU difference."""

import json

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

import compare
from common import DataError
from segmentation.evaluation import evaluate_model


def constant_model(path, probability):
    """An ONNX segmentation model whose `mask` is `probability` at every pixel (the app's contract)."""
    nodes = [helper.make_node("ReduceMean", ["image"], ["m"], axes=[1], keepdims=1),
             helper.make_node("Mul", ["m", "zero"], ["z"]), helper.make_node("Add", ["z", "p"], ["mask"])]
    graph = helper.make_graph(nodes, "constant", [helper.make_tensor_value_info("image", TensorProto.FLOAT,
                                                                                  [1, 3, 640, 480])],
                              [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 1, 640, 480])],
                              [helper.make_tensor("zero", TensorProto.FLOAT, [], [0.0]),
                               helper.make_tensor("p", TensorProto.FLOAT, [], [probability])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))
    return str(path)


def test_identical_models_are_not_told_apart():
    counts = np.array([[90, 100], [0, 0], [40, 80]])
    r = compare.paired_bootstrap(counts, counts.copy())
    assert r["difference"] == 0 and r["interval"] == [0.0, 0.0] and r["a_ahead_share"] == 0
    assert compare.verdict(r) == "not told apart" and r["iou_a"] == pytest.approx(130 / 180)


def test_a_model_better_on_every_image_is_ahead_and_a_mixed_one_is_not():
    rng = np.random.default_rng(1)
    union = rng.integers(5000, 20000, 200)
    b = np.stack([union - 500, union], 1)
    better = np.stack([union - 400, union], 1)       # 100 px more right on every image
    r = compare.paired_bootstrap(better, b)
    assert r["difference"] > 0 and r["interval"][0] > 0 and r["a_ahead_share"] == 1
    assert compare.verdict(r) == "first ahead"
    assert compare.verdict(compare.paired_bootstrap(b, better)) == "second ahead"
    mixed = b.copy()
    mixed[:, 0] += np.where(np.arange(200) % 2, 300, -300)   # as much better on half as worse on the other half
    r = compare.paired_bootstrap(mixed, b)
    assert r["interval"][0] < 0 < r["interval"][1] and compare.verdict(r) == "not told apart"
    # The interval is reproducible per seed, and other seeds draw other resamples.
    assert compare.paired_bootstrap(mixed, b, seed=3) == compare.paired_bootstrap(mixed, b, seed=3)
    assert compare.paired_bootstrap(mixed, b, seed=3)["interval"] != \
        compare.paired_bootstrap(mixed, b, seed=4)["interval"]


def test_the_interval_is_the_central_95_percent_of_paired_resamples(monkeypatch):
    """The same resamples drawn by hand: the interval is their 2.5th and 97.5th percentile, whatever
    the chunking; a split without any card scores 1 for both models."""
    rng = np.random.default_rng(7)
    union = rng.integers(100, 1000, 50)
    a, b = np.stack([union - rng.integers(0, 50, 50), union], 1), np.stack([union - rng.integers(0, 50, 50), union], 1)
    monkeypatch.setattr(compare, "BOOTSTRAP_CHUNK", 50 * 7)   # 7 rounds per chunk, the last one short
    r = compare.paired_bootstrap(a, b, rounds=200, seed=5)
    draws = np.random.default_rng(5).integers(0, 50, (200, 50))
    diff = [a[d, 0].sum() / a[d, 1].sum() - b[d, 0].sum() / b[d, 1].sum() for d in draws]
    assert r["interval"] == pytest.approx(list(np.percentile(diff, [2.5, 97.5])))
    assert r["a_ahead_share"] == pytest.approx(np.mean(np.array(diff) > 0))
    empty = np.zeros((4, 2), dtype=np.int64)
    r = compare.paired_bootstrap(empty, empty, rounds=100)
    assert r["iou_a"] == r["iou_b"] == 1 and r["interval"] == [0.0, 0.0]


def test_counts_of_different_images_are_refused():
    with pytest.raises(ValueError, match="same images"):
        compare.paired_bootstrap(np.ones((3, 2)), np.ones((4, 2)))


def test_compare_scores_like_evaluate_on_every_named_split(tiny_dataset, tmp_path, capsys):
    everywhere = constant_model(tmp_path / "everywhere.onnx", 1.0)
    nowhere = constant_model(tmp_path / "nowhere.onnx", 0.0)
    out = tmp_path / "compare.json"
    argv = [everywhere, nowhere, "--data", f"a={tiny_dataset}", "--data", f"b={tiny_dataset}", "--limit", "6",
            "--rounds", "200", "--json", str(out), "--quiet"]
    result = compare.main(compare.get_args_parser().parse_args(argv))
    expected = evaluate_model(everywhere, tiny_dataset, "test", limit=6, quiet=True)["iou"]
    for name in ("a", "b"):
        r = result["splits"][name]
        assert r["images"] == 6 and r["iou_a"] == pytest.approx(expected) and r["iou_b"] == 0
        assert r["interval"][0] > 0 and compare.verdict(r) == "first ahead"
    assert json.loads(out.read_text())["splits"]["a"]["difference"] == pytest.approx(expected)
    table = capsys.readouterr().out
    assert "| `everywhere.onnx` | `nowhere.onnx` |" in table and f"| a | 6 | {expected:.4f} | 0.0000 |" in table
    # A model against itself: no difference at all.
    same = compare.main(compare.get_args_parser().parse_args([everywhere, everywhere, "--data", f"a={tiny_dataset}",
                                                              "--limit", "3", "--quiet"]))
    assert same["splits"]["a"]["difference"] == 0 and same["splits"]["a"]["interval"] == [0.0, 0.0]


def test_bad_options_name_the_problem(tiny_dataset, tmp_path):
    model = constant_model(tmp_path / "m.onnx", 1.0)
    parse = compare.get_args_parser().parse_args
    with pytest.raises(DataError, match="--data names must differ: a, a"):
        compare.main(parse([model, model, "--data", f"a={tiny_dataset}", "--data", f"a={tiny_dataset}"]))
    with pytest.raises(DataError, match="--rounds must be at least 100"):
        compare.main(parse([model, model, "--data", f"a={tiny_dataset}", "--rounds", "10"]))
    with pytest.raises(DataError, match="expected NAME=DIR"):
        compare.main(parse([model, model, "--data", tiny_dataset]))
    # A folder without the split is found before the first split is scored.
    with pytest.raises(DataError, match=f"{tmp_path}/test/images does not exist"):
        compare.main(parse([model, model, "--data", f"a={tiny_dataset}", "--data", f"b={tmp_path}"]))


def test_files_of_the_same_name_are_told_apart_by_path(tiny_dataset, tmp_path, capsys, monkeypatch):
    (tmp_path / "old").mkdir()
    first = constant_model(tmp_path / "m.onnx", 1.0)
    second = constant_model(tmp_path / "old" / "m.onnx", 0.0)
    monkeypatch.chdir(tmp_path)
    compare.main(compare.get_args_parser().parse_args([first, second, "--data", f"a={tiny_dataset}", "--limit", "2",
                                                       "--rounds", "100", "--quiet"]))
    assert "| `m.onnx` | `old/m.onnx` |" in capsys.readouterr().out
