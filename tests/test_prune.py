import os

import pytest
import torch

import export
import prune
from conftest import SEG_OPTIONS
from segmentation import export as segmentation_export
from segmentation import pruning
from segmentation.model import load_checkpoint_model

pytest.importorskip("torch_pruning")


@pytest.fixture(scope="module")
def trained(segmentation_run):
    return os.path.join(segmentation_run["output_dir"], "best.pt")


def test_prune_shrinks_model_keeps_classes_and_exports(trained, tiny_dataset, tmp_path, monkeypatch):
    out = tmp_path / "pruning"
    export_dir = tmp_path / "exported"
    exported = []
    # The export CLI (FP16 + FP32 + model card) is covered in test_export.py; here: it is called
    # for each pruned checkpoint.
    monkeypatch.setattr(export, "main", lambda a: exported.append((a.checkpoint, a.name, a.output_dir)))
    gated = {}

    def export_and_verify(model, path, **kwargs):
        gated[os.path.basename(path)] = info = segmentation_export.export_and_verify(model, path, **kwargs)
        return info

    monkeypatch.setattr(prune, "export_and_verify", export_and_verify)
    rows = prune.main(prune.get_args_parser().parse_args(
        [trained, "--data-path", tiny_dataset, "--output-dir", str(out), "--pruning-ratios", "0.5",
         "--iterative-steps", "2", "--finetune-epochs", "1", "--latency-runs", "1", "--export",
         "--export-dir", str(export_dir), *SEG_OPTIONS]))
    base, pruned = rows
    # 50 % of the channels of most layers: parameters and MACs drop to roughly a quarter to a half.
    assert pruned["params"] < 0.6 * base["params"]
    assert pruned["macs"] < 0.6 * base["macs"]
    model, ckpt = load_checkpoint_model(pruned["checkpoint"])
    assert ckpt["pruning"]["ratio"] == 0.5
    assert ckpt["pruning"]["latency_ratio"] == pytest.approx(pruned["latency_ms"] / base["latency_ms"])
    assert ckpt["pruning"]["base_iou"] == base["iou_finetuned"]
    head = model.net.classifier
    assert head.low_classifier.out_channels == 2 and head.high_classifier.out_channels == 2
    x = torch.rand(1, 3, 640, 480)
    with torch.no_grad():
        y = model(x)
        assert y.shape == (1, 2, 640, 480)
        assert torch.allclose(y, pruned["model"](x), atol=1e-5)   # reloads to the same function
    report = (out / "report.md").read_text()
    assert "card_segmentation_pruned50" in report and "unpruned" in report
    assert exported == [(pruned["checkpoint"], "card_segmentation_pruned50", str(export_dir))]
    # Its FP32 ONNX file, measured for the report, passed the same parity gate as the full model's.
    assert set(gated) == {"unpruned.onnx", "card_segmentation_pruned50.onnx"}
    gate = gated["card_segmentation_pruned50.onnx"]["gate"]
    assert gate["images"] == 4 and gate["mask_iou"] >= segmentation_export.GATE_MIN_MASK_IOU
    assert gate["max_prob_diff"] <= gate["max_prob_diff_allowed"]
    rounding = segmentation_export.GATE_FP32_ROUNDING_FACTOR * gate["torch_fp32_prob_diff"]
    assert gate["max_prob_diff_allowed"] == max(segmentation_export.GATE_MAX_PROB_DIFF["fp32"], rounding)
    assert pruned["onnx_fp32_bytes"] < 0.6 * base["onnx_fp32_bytes"]


def test_target_macs_picks_a_ratio(trained, monkeypatch):
    # MACs are counted (and the graph traced) at 128x96 instead of 640x480: the network is fully
    # convolutional, so every candidate's MACs shrink alike and the search takes the same steps.
    monkeypatch.setattr(pruning, "IMAGE_HEIGHT", 128)
    monkeypatch.setattr(pruning, "IMAGE_WIDTH", 96)
    monkeypatch.setattr(pruning, "TRACE_SIZE", (1, 3, 128, 96))
    model, _ = load_checkpoint_model(trained)
    base_macs = pruning.count_macs_params(model)[0]

    def macs_after(ratio):
        trial, _ = load_checkpoint_model(trained)
        pruning.make_pruner(trial, ratio, 1, "magnitude").step()
        return pruning.count_macs_params(trial)[0]

    ratio = pruning.find_ratio_for_macs(model, 0.6, "magnitude")
    assert 0.1 < ratio < 0.5
    assert macs_after(ratio) <= 0.6 * base_macs
    assert macs_after(ratio - 0.01) > 0.6 * base_macs, "the smallest ratio that meets the target"


def test_prune_keeps_output_stride_32(trained, tiny_dataset, tmp_path):
    """The speed recipe (train/README.md): an output-stride-32 checkpoint pruned at 0.5 stays strided."""
    from segmentation.model import output_stride, to_output_stride_32

    model, ckpt = load_checkpoint_model(trained)
    source = tmp_path / "os32.pt"
    torch.save({"model": to_output_stride_32(model).state_dict(), "args": {"output_stride": 32}}, source)
    rows = prune.main(prune.get_args_parser().parse_args(
        [str(source), "--data-path", tiny_dataset, "--output-dir", str(tmp_path / "pruning"), "--pruning-ratios",
         "0.5", "--iterative-steps", "1", "--finetune-epochs", "0", "--latency-runs", "1", *SEG_OPTIONS]))
    base, pruned = rows
    assert pruned["macs"] < 0.6 * base["macs"]
    reloaded, ckpt = load_checkpoint_model(pruned["checkpoint"])
    assert output_stride(reloaded) == 32 and ckpt["args"]["output_stride"] == 32
    with torch.no_grad():
        assert reloaded(torch.rand(1, 3, 128, 96)).shape == (1, 2, 128, 96)


def test_prune_refuses_architecture_options(trained, tiny_dataset, tmp_path):
    """train.py's --output-stride / --reduced-tail reach prune.py's parser; it must not ignore them silently."""
    with pytest.raises(prune.ScriptError, match="keeps the checkpoint's architecture"):
        prune.main(prune.get_args_parser().parse_args(
            [trained, "--data-path", tiny_dataset, "--output-dir", str(tmp_path), "--output-stride", "32",
             *SEG_OPTIONS]))
