"""export_corners.py (parity gate, refiner merged into the graph), evaluate_corners.py and the
augmentation preview, on the tiny trained corner model."""

import json
import os
import shutil

import numpy as np
import pytest
import torch

from common import DataError
from conftest import make_dataset
from corners.data import corner_samples
from onnx_utils import GateError


def test_export_passes_the_parity_gate_and_evaluates_like_pytorch(trained_corners, refiner_ckpt, corner_dataset,
                                                                   tmp_path):
    import onnxruntime as ort

    import evaluate_corners
    import export_corners
    from corners.metrics import decode_tensor
    from corners.predict import load_checked, to_input
    from corners.refine import finish_corners, load_refiner

    out = tmp_path / "exported"
    card_free = tmp_path / "card_free"    # a false-alarm check: card-free frames only
    make_dataset(card_free, 0, 3, seed=9, workers=1, preset="v1", extra=["--negative-fraction", "1"])
    args = export_corners.get_args_parser().parse_args([
        trained_corners["best"], "--output-dir", str(out), "--data-path", corner_dataset, "--latency-runs", "1",
        "--refiner", refiner_ckpt["best"], "--extra-eval", f"again={corner_dataset}",
        "--extra-eval", f"nocard={card_free}", "--extra-eval-note", "again=the same split",
        "--baseline", str(tmp_path / "missing.onnx")])
    with pytest.raises(DataError, match="missing.onnx"):
        export_corners.main(args)
    args.baseline = None
    meta = export_corners.main(args)
    path = out / "card_corners.onnx"
    # The FP16 file and its FP32 twin: one contract, both gated, timed, scored on every split.
    assert [f["file"] for f in meta["files"]] == ["card_corners.onnx", "card_corners_fp32.onnx"]
    for f, precision in zip(meta["files"], ("fp16", "fp32")):
        sess = ort.InferenceSession(str(out / f["file"]), providers=["CPUExecutionProvider"])
        (inp,) = sess.get_inputs()
        assert (inp.name, inp.type, inp.shape) == ("images", "tensor(float)", [1, 3, 640, 480])
        assert [(o.name, o.type, o.shape) for o in sess.get_outputs()] == [
            ("output0", "tensor(float)", [1, 17, 6300]), ("corners", "tensor(float)", [1, 4, 2]),
            ("score", "tensor(float)", [1]), ("visibility", "tensor(float)", [1, 4]),
            ("fallback", "tensor(float)", [1, 4]), ("cards", "tensor(float)", [1, 12, 4, 2]),
            ("card_scores", "tensor(float)", [1, 12])]
        assert f["gate"]["max_corner_diff_px"] <= 1.0 and f["gate"]["max_refined_corner_diff_px"] <= 1.0
        assert f["gate"]["max_stage_diff_px"] <= 0.1
        assert f["precision"] == precision and f["detector_cpu_latency_ms"] > 0
        assert set(f["extra_metrics"]) == {"test", "again", "nocard"}
        assert f["extra_metrics"]["nocard"]["images"] == 0 and f["extra_metrics"]["nocard"]["negative_images"] == 3
    assert meta["refiner"]["epochs_run"] == 1
    # The refiner graph beside them: any number of quads of one frame, gated on the annotated cards.
    r = meta["refiner_file"]
    assert r["file"] == "card_corners_refiner.onnx" and r["gate"]["quads"] >= 3 and r["gate"]["max_diff_px"] <= 0.1
    assert set(r["cpu_latency_ms"]) == {"1", "9"}
    sess = ort.InferenceSession(str(out / r["file"]), providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in sess.get_inputs()] == [("images", [1, 3, 640, 480]), ("quads", ["cards", 4, 2])]
    assert [o.name for o in sess.get_outputs()] == ["corners", "valid", "visibility", "fallback"]
    f = meta["files"][0]
    assert "pct_within_5px" in f["test_metrics"] and "pct_within_5px" in f["detector_test_metrics"]
    assert set(f["detector_extra_metrics"]) == {"test", "again", "nocard"}
    with open(out / "README.md") as fh:
        card = fh.read()
    assert "**`card_corners`**, one card per frame" in card and "its detector alone (`output0`)" in card
    assert "card_corners_fp32.onnx" in card and "again (3 images" in card and "the same split" in card
    assert "| `card_corners_refiner.onnx` | the corner refiner alone" in card
    # A card-free split has no corner row, only its false alarms, for every column.
    assert "nocard (0 images" not in card
    alarms = next(line for line in card.splitlines() if line.startswith("| nocard (3 card-free frames) |"))
    assert alarms.count("|") == 5 and "n/a" not in alarms
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    # The tiny model finds no card, so the gate compared nothing, and its near-equal anchor scores
    # let FP16 pick another best anchor than FP32. What the merge must get right: `corners` and
    # `score` are the refine stage applied to the file's own output0.
    refiner = load_refiner(refiner_ckpt["best"])
    for p, _ in corner_samples(corner_dataset, "test"):
        x = to_input(load_checked(p)[None])
        output0, corners, score = sess.run(["output0", "corners", "score"], {"images": x})
        raw, best = decode_tensor(torch.from_numpy(output0))
        with torch.no_grad():
            expected, expected_score, _, _ = finish_corners(refiner, torch.from_numpy(x), raw, best)
        assert np.abs(corners - expected.numpy()).max() < 1e-3
        assert np.abs(score - expected_score.numpy()).max() < 1e-6

    # The gate catches a stage that is not what PyTorch computes (here PyTorch's side is shifted 2 px).
    from corners import export as corner_export

    real = corner_export.finish_corners

    def shifted(*a, **k):
        c, *rest = real(*a, **k)
        return (c + 2.0, *rest)
    corner_export.finish_corners = shifted
    try:
        with pytest.raises(GateError, match="refine stage"):
            corner_export.parity_gate(str(path), trained_corners_model(trained_corners), corner_export.gate_images(
                corner_dataset, 2), refiner, "fp16")
    finally:
        corner_export.finish_corners = real

    m_onnx, _ = evaluate_corners.evaluate_corner_model(str(path), corner_dataset, quiet=True)
    m_pt, _ = evaluate_corners.evaluate_corner_model(trained_corners["best"], corner_dataset, quiet=True,
                                                     refiner=refiner_ckpt["best"])
    assert m_onnx["images"] == m_pt["images"] and m_onnx["missed_cards"] == m_pt["missed_cards"]
    assert m_onnx["refined"] and m_pt["refined"]


def trained_corners_model(trained):
    from corners.predict import load_pose_model

    return load_pose_model(trained["best"]).model.float().eval()


def test_export_without_refiner_keeps_the_detector_contract(trained_corners, corner_dataset, tmp_path):
    import onnxruntime as ort

    import evaluate_corners
    import export_corners

    args = export_corners.get_args_parser().parse_args([
        trained_corners["best"], "--output-dir", str(tmp_path), "--data-path", corner_dataset, "--latency-runs", "1",
        "--no-refine", "--skip-eval"])
    meta = export_corners.main(args)
    sess = ort.InferenceSession(str(tmp_path / "card_corners.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["output0"] and meta["refiner"] is None
    # Scoring such a file says the corners were not refined, whatever was asked.
    m, _ = evaluate_corners.evaluate_corner_model(str(tmp_path / "card_corners.onnx"), corner_dataset, quiet=True)
    assert m["refined"] is False
    with pytest.raises(DataError, match="opset 16"):
        export_corners.main(export_corners.get_args_parser().parse_args([
            trained_corners["best"], "--output-dir", str(tmp_path / "o13"), "--data-path", corner_dataset,
            "--opset", "13"]))


def test_export_refuses_missing_mobile_extras(trained_corners, corner_dataset, tmp_path, monkeypatch):
    import export_corners

    monkeypatch.setattr(export_corners.importlib.util, "find_spec", lambda name: None)
    args = export_corners.get_args_parser().parse_args([trained_corners["best"], "--formats", "onnx,tflite",
                                                        "--output-dir", str(tmp_path), "--data-path", corner_dataset])
    with pytest.raises(DataError, match="pip install litert-torch"):
        export_corners.main(args)
    assert not os.listdir(tmp_path)
    # A mistyped --seg-model is found before any file is exported next to the old record.
    args = export_corners.get_args_parser().parse_args([trained_corners["best"], "--output-dir", str(tmp_path),
                                                        "--data-path", corner_dataset, "--seg-model", "nope.onnx"])
    with pytest.raises(DataError, match="--seg-model .*nope.onnx: model file not found"):
        export_corners.main(args)
    assert not os.listdir(tmp_path)


def test_evaluate_script_writes_json_and_overlays(trained_corners, refiner_ckpt, corner_dataset, tmp_path, capsys):
    import evaluate_corners

    args = evaluate_corners.get_args_parser().parse_args([
        trained_corners["best"], "--data-path", corner_dataset, "--json", str(tmp_path / "m.json"), "--overlays", "3",
        "--refiner", refiner_ckpt["best"]])
    m = evaluate_corners.main(args)
    with open(tmp_path / "m.json") as f:
        saved = json.load(f)
    assert saved["images"] == m["images"] and "pct_within_10px" in saved and saved["refined"] is True
    # The generator's corner_visibility.json is there: hidden corners scored alone, the fallback's share.
    assert saved["hidden_corners"] >= 0 and "fallback_pct" in saved and "fallback_pct_hidden" in saved
    assert [n[:3] for n in sorted(os.listdir(tmp_path / "m_overlays"))] == ["01_", "02_", "03_"]
    with pytest.raises(DataError, match="--overlays must be 0 or more"):
        evaluate_corners.main(evaluate_corners.get_args_parser().parse_args([trained_corners["best"], "--overlays",
                                                                             "-2"]))
    args = evaluate_corners.get_args_parser().parse_args([
        trained_corners["best"], "--data-path", corner_dataset, "--json", str(tmp_path / "d.json"), "--no-refine"])
    assert evaluate_corners.main(args)["refined"] is False
    # A card-free set (a false-alarm check) prints its false alarms alone: no table of NaN.
    make_dataset(tmp_path / "card_free", 0, 2, seed=9, workers=1, preset="v1", extra=["--negative-fraction", "1"])
    capsys.readouterr()
    args = evaluate_corners.get_args_parser().parse_args([
        trained_corners["best"], "--data-path", str(tmp_path / "card_free"), "--json", str(tmp_path / "n.json"),
        "--refiner", refiner_ckpt["best"]])
    assert evaluate_corners.main(args)["negative_images"] == 2
    printed = capsys.readouterr().out
    assert "of 2 card-free images" in printed and "nan" not in printed


def test_preview_writes_ten_examples(corner_dataset, tmp_path):
    import preview_corner_augmentations as preview

    paths = preview.main(preview.get_args_parser().parse_args(
        ["--data-path", corner_dataset, "--output-dir", str(tmp_path / "p")]))
    assert len(paths) == 10 and all(os.path.getsize(p) > 0 for p in paths)
    assert os.path.isfile(tmp_path / "p" / "grid.jpg")
    shutil.rmtree(tmp_path / "p")

