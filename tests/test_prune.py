import numpy as np
import onnxruntime as ort
import pytest
import segmentation_export
import torch

import export
import prune
import train
from model import load_checkpoint_model

pytest.importorskip("torch_pruning")

COMMON = ["--size", "64", "48", "--batch-size", "4", "--val-batch-size", "4", "--max-train-images", "8",
          "--max-val-images", "4", "--workers", "0", "--no-pretrained", "--quiet", "--device", "cpu", "--threads", "2"]


@pytest.fixture(scope="module")
def trained(tiny_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("seg")
    train.main(train.get_args_parser().parse_args(["--data-path", tiny_dataset, "--output-dir", str(out),
                                                   "--epochs", "1", *COMMON]))
    return str(out / "best.pt")


def test_prune_shrinks_model_keeps_classes_and_exports(trained, tiny_dataset, tmp_path, monkeypatch):
    out = tmp_path / "pruning"
    export_dir = tmp_path / "exported"
    exported = []
    # The export CLI (FP16 + FP32 + model card) is covered in test_export.py; here: it is called
    # for each pruned checkpoint.
    monkeypatch.setattr(export, "main", lambda a: exported.append((a.checkpoint, a.name, a.output_dir)))
    rows = prune.main(prune.get_args_parser().parse_args(
        [trained, "--data-path", tiny_dataset, "--output-dir", str(out), "--pruning-ratios", "0.5",
         "--iterative-steps", "2", "--finetune-epochs", "1", "--latency-runs", "2", "--export",
         "--export-dir", str(export_dir), *COMMON]))
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
    # The pruned model passes the same parity gate as the full one.
    onnx_path = str(tmp_path / "pruned.onnx")
    images = segmentation_export.gate_images(tiny_dataset, 2)
    info = segmentation_export.export_and_verify(model, onnx_path, fp16=False, images=images)
    assert info["gate"]["mask_iou"] >= segmentation_export.GATE_MIN_MASK_IOU
    out_arr = ort.InferenceSession(onnx_path, providers=["CPUExecutionProvider"]).run(None, {"image": x.numpy()})[0]
    assert out_arr.shape == (1, 1, 640, 480) and np.isfinite(out_arr).all()
    assert pruned["onnx_fp32_bytes"] < 0.6 * base["onnx_fp32_bytes"]


def test_target_macs_picks_a_ratio(trained):
    model, _ = load_checkpoint_model(trained)
    ratio = prune.find_ratio_for_macs(model, 0.6, "magnitude")
    assert 0.1 < ratio < 0.5
    trial = model
    prune.make_pruner(trial, ratio, 1, "magnitude").step()
    assert prune.count_macs_params(trial)[0] <= 0.6 * prune.count_macs_params(load_checkpoint_model(trained)[0])[0]
