"""demo/benchmark.py's own logic, without a browser: the profile summary and the model table."""

import json
import os
import sys

import pytest

sys.path.insert(0, os.path.realpath(os.path.join(os.path.dirname(__file__), "..", "demo")))
import benchmark  # noqa: E402


def _event(name, ts, dur, cat="Node", op=None, shape=None):
    e = {"cat": cat, "pid": 1, "tid": 1, "dur": dur, "ts": ts, "ph": "X", "name": name, "args": {}}
    if op:
        e["args"] = {"op_name": op, "output_type_shape": [{"float": shape or [1]}]}
    return json.dumps(e) + ","


def test_profile_summary_skips_the_warm_up_and_sums_by_operator():
    """Two runs: the first (session start) is skipped; the second's kernels are summed per operator
    type and per node, and what the kernels leave of the run is the executor's own time."""
    lines = ["["]
    for t0, scale in ((0, 100), (1000, 1)):
        lines.append(_event("model_run", t0, 100, cat="Session"))
        lines.append(_event("/a/Conv_kernel_time", t0 + 1, 50 * scale, op="Conv", shape=[1, 8, 4, 4]))
        lines.append(_event("/b/Conv_kernel_time", t0 + 60, 20 * scale, op="Conv"))
        lines.append(_event("/c/Sigmoid_kernel_time", t0 + 80, 10 * scale, op="Sigmoid"))
    lines += ["not a trace line", "]"]
    prof = benchmark.summarise_profile(lines, skip_runs=1, top=2)
    assert prof["runs"] == 1 and prof["run_ms"] == pytest.approx(0.1)
    ops = {o["op"]: o for o in prof["ops"]}
    assert ops["Conv"]["share"] == pytest.approx(0.7) and ops["Conv"]["ms"] == pytest.approx(0.07)
    assert ops["Sigmoid"]["share"] == pytest.approx(0.1)
    assert ops["(between kernels)"]["share"] == pytest.approx(0.2)
    assert [n["node"] for n in prof["nodes"]] == ["/a/Conv", "/b/Conv"]
    assert prof["nodes"][0]["output_shape"] == [1, 8, 4, 4]
    with pytest.raises(ValueError, match="no profiled inference"):
        benchmark.summarise_profile(lines, skip_runs=2)


def test_model_table_gives_each_time_as_a_ratio_of_the_reference_in_the_same_run():
    out = {"wasm_reference": "ref16", "native_reference": "ref32",
           "files": {"ref16": {"macs": 2.3e9, "iou": {"unseen": 0.98}}, "ref32": {"macs": 2.3e9, "iou": {}},
                     "new": {"macs": 0.7e9, "iou": {"unseen": 0.97}}},
           "models": [{"model": m, "threads": 2, "median_ms": ms} for m, ms in
                      (("ref16", 200.0), ("ref32", 150.0), ("new", 60.0))],
           "native": [{"model": m, "threads": 2, "median_ms": ms} for m, ms in
                      (("ref16", 90.0), ("ref32", 40.0), ("new", 14.0))]}
    table = benchmark.model_table(out)
    new = next(line for line in table if line.startswith("| `new.onnx`"))
    assert new == "| `new.onnx` | 0.70 | 0.9700 | 60.0 (0.30x) | 14.0 (0.35x) |"
    assert next(line for line in table if "`ref32" in line).startswith("| `ref32.onnx` | 2.30 | – | 150.0 (0.75x) |")


def test_speed_candidates_are_exported_with_their_macs(tmp_path):
    """train/speed_candidates.py: the deployed model with output stride 32, and the full model pruned at
    0.5, as ONNX files with the segmentation contract and fewer MACs than what they come from."""
    import onnxruntime as ort

    import speed_candidates
    from common import EXPORT_DIR
    from onnx_utils import conv_macs

    report = speed_candidates.main(speed_candidates.get_args_parser().parse_args(
        ["--output-dir", str(tmp_path), "--only", "os32_pruned30", "pruned50"]))
    assert sorted(report) == ["os32_pruned30", "pruned50"]
    assert json.loads((tmp_path / "candidates.json").read_text()) == report
    deployed = conv_macs(os.path.join(EXPORT_DIR, "card_segmentation_fp32.onnx"))
    full = conv_macs(os.path.join(EXPORT_DIR, "card_segmentation_full_fp32.onnx"))
    assert report["os32_pruned30"]["conv_macs"] < 0.7 * deployed
    assert report["pruned50"]["conv_macs"] < 0.4 * full
    for name in report:
        sess = ort.InferenceSession(str(tmp_path / f"{name}_untrained.onnx"), providers=["CPUExecutionProvider"])
        assert [(o.name, o.shape) for o in sess.get_outputs()] == [("mask", [1, 1, 640, 480])]


def test_frozen_baselines_come_from_git_history_checked_by_hash(tmp_path, monkeypatch):
    import hashlib
    import subprocess

    name = "demo/js/models.json"   # any committed file stands in for a model
    committed = subprocess.run(["git", "-C", benchmark.ROOT, "show", f"HEAD:{name}"], capture_output=True,
                               check=True).stdout
    digest = hashlib.sha256(committed).hexdigest()[:16]
    monkeypatch.setattr(benchmark, "FROZEN_BASELINES", {"base": ("HEAD", name, digest)})
    paths = benchmark.frozen_baselines(str(tmp_path))
    assert list(paths) == ["base"] and open(paths["base"], "rb").read() == committed
    monkeypatch.setattr(benchmark, "FROZEN_BASELINES", {"base": ("HEAD", name, "0" * 16)})
    with pytest.raises(SystemExit, match="not the frozen baseline"):
        benchmark.frozen_baselines(str(tmp_path))
    # A commit the clone lacks (a shallow clone): left out with a warning, no stray file.
    monkeypatch.setattr(benchmark, "FROZEN_BASELINES", {"base": ("0" * 40, name, digest)})
    (tmp_path / "shallow").mkdir()
    assert benchmark.frozen_baselines(str(tmp_path / "shallow")) == {}
    assert os.listdir(tmp_path / "shallow") == []
