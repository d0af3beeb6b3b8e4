import json
import os
import re

import cv2
import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch

import export
import model_card
from common import EXPORT_DIR, DataError
from conftest import make_dataset, render_training_card
from onnx_utils import GateError, sha256
from segmentation import export as segmentation_export
from segmentation.dataset import find_samples, load_sample
from segmentation.model import build_model


@pytest.fixture(scope="module")
def small_model():
    torch.manual_seed(0)
    m = build_model(pretrained_backbone=False).eval()
    # A few BN statistics updates so the model is not the trivial initialisation.
    m.train()
    with torch.no_grad():
        for _ in range(2):
            m(torch.rand(2, 3, 128, 96))
    return m.eval()


def test_export_passes_gate_and_has_contract(small_model, tiny_dataset, tmp_path):
    images = segmentation_export.gate_images(tiny_dataset, 2)
    path = str(tmp_path / "m.onnx")
    info = segmentation_export.export_and_verify(small_model, path, fp16=True, images=images)
    assert info["gate"]["mask_iou"] >= segmentation_export.GATE_MIN_MASK_IOU
    proto = onnx.load(path)
    assert any(init.data_type == onnx.TensorProto.FLOAT16 for init in proto.graph.initializer)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.shape, inp.type) == ("image", [1, 3, 640, 480], "tensor(float)")
    assert (out.name, out.shape, out.type) == ("mask", [1, 1, 640, 480], "tensor(float)")


def _confident(model):
    """A copy whose classifier is scaled up, so its probabilities span 0..1 rather than sit at 0.5."""
    import copy

    m = copy.deepcopy(model)
    with torch.no_grad():
        for conv in (m.net.classifier.low_classifier, m.net.classifier.high_classifier):
            conv.weight.mul_(1000)
            conv.bias.normal_()   # a wrong bias in the fold must show too
    return m.eval()


def test_head_rewrite_is_the_softmax_definition(small_model):
    """sigmoid(resize(l1 - l0)) with the difference folded into the classifier == softmax(...)[:, 1]."""
    model = _confident(small_model)
    x = torch.rand(2, 3, 160, 120, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = segmentation_export.reference_probability(model, x)
        got = segmentation_export.ExportWrapper(model)(x)
    assert got.shape == ref.shape == (2, 1, 160, 120)
    assert ref.min() < 0.1 and ref.max() > 0.9   # the comparison covers the whole range
    assert float((got - ref).abs().max()) < 1e-5
    # The folded copy leaves the caller's model alone.
    assert small_model.net.classifier.low_classifier.out_channels == 2


def test_head_rewrite_refuses_a_model_without_the_lraspp_head():
    with pytest.raises(TypeError, match="LR-ASPP"):
        segmentation_export.card_logit_model(torch.nn.Conv2d(3, 2, 1))


def test_exported_graph_has_the_rewritten_head(small_model, tmp_path):
    """No Softmax; the full-size Resize moves one channel and a Sigmoid makes the mask."""
    path = str(tmp_path / "m.onnx")
    segmentation_export.to_onnx(small_model, path, fp16=False)
    graph = onnx.load(path).graph
    ops = [n.op_type for n in graph.node]
    assert "Softmax" not in ops and ops[-2:] == ["Resize", "Sigmoid"]
    classifier = [i for i in graph.initializer if len(i.dims) == 4 and i.dims[2:] == [1, 1] and i.dims[0] <= 2]
    assert classifier and all(i.dims[0] == 1 for i in classifier)


def test_conv_macs_of_an_exported_file_match_pytorch(small_model, tmp_path):
    """onnx_utils.conv_macs (the benchmark's MACs column) counts what the network computes: the sum
    over its Conv2d layers of output elements x (input channels / groups) x kernel area, FP16 or not."""
    from onnx_utils import conv_macs

    model = segmentation_export.card_logit_model(small_model)
    macs = []

    def hook(module, inputs, output):
        kh, kw = module.kernel_size
        macs.append(output.numel() * module.in_channels // module.groups * kh * kw)
    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    with torch.no_grad():
        model(torch.rand(1, 3, 640, 480))
    for h in handles:
        h.remove()
    for fp16 in (False, True):
        path = str(tmp_path / f"m{fp16}.onnx")
        segmentation_export.to_onnx(small_model, path, fp16=fp16)
        assert conv_macs(path) == sum(macs)


def test_corrupted_export_fails_gate_and_leaves_no_file(small_model, tiny_dataset, tmp_path):
    images = segmentation_export.gate_images(tiny_dataset, 2)
    path = tmp_path / "bad.onnx"
    path.write_bytes(b"an older export that no longer matches")

    def corrupt(p):
        # Scale and flip the classifier: a plausible-looking but wrong model.
        proto = onnx.load(p)
        for init in proto.graph.initializer:
            arr = onnx.numpy_helper.to_array(init)
            if arr.ndim == 4 and arr.shape[0] == 1:   # the folded card-minus-background convolutions
                init.CopyFrom(onnx.numpy_helper.from_array(-arr * 5, init.name))
        onnx.save(proto, p)

    with pytest.raises(GateError, match="parity gate"):
        segmentation_export.export_and_verify(small_model, str(path), fp16=False, images=images, post_export=corrupt)
    assert not path.exists()
    assert not [f for f in os.listdir(tmp_path) if f.endswith(".onnx")]


def test_gate_tells_a_small_error_from_fp32_rounding(small_model, tiny_dataset, tmp_path):
    """The FP32 gate's bound rests on FP32 rounding (PyTorch's own FP32 forward against float64, times
    a factor): a model whose probabilities span 0..1 passes it, and the same file with its card logit
    moved by 0.02 (a probability error of up to 0.005 near the boundary) fails it."""
    model = _confident(small_model)
    images = segmentation_export.gate_images(tiny_dataset, 2)
    info = segmentation_export.export_and_verify(model, str(tmp_path / "ok.onnx"), fp16=False, images=images)
    gate = info["gate"]
    assert gate["max_prob_diff"] <= gate["max_prob_diff_allowed"] == segmentation_export.GATE_MAX_PROB_DIFF["fp32"]
    assert gate["torch_fp32_prob_diff"] < 1e-4

    def nudge(p):
        proto = onnx.load(p)
        for init in proto.graph.initializer:
            arr = onnx.numpy_helper.to_array(init)
            if arr.shape == (1,) and "low_classifier" in init.name:   # the folded card-minus-background bias
                init.CopyFrom(onnx.numpy_helper.from_array(arr + np.float32(0.02), init.name))
                break
        else:
            raise AssertionError("no folded low_classifier bias in the graph")
        onnx.save(proto, p)

    with pytest.raises(GateError, match="max probability difference"):
        segmentation_export.export_and_verify(model, str(tmp_path / "off.onnx"), fp16=False, images=images,
                                              post_export=nudge)


def test_export_cli_writes_files_and_model_card(small_model, tiny_dataset, tmp_path):
    ckpt = tmp_path / "best.pt"
    torch.save({"model": small_model.state_dict(), "args": {"lr": 1e-3}, "history": []}, ckpt)
    out = tmp_path / "exported"
    # The model card's metrics come from --eval-data-path: three test images of tiny_dataset, linked.
    eval_set = tmp_path / "eval"
    for sub in ("images", "masks"):
        os.makedirs(eval_set / "test" / sub)
    for image, mask in find_samples(tiny_dataset, "test")[:3]:
        os.symlink(image, eval_set / "test" / "images" / os.path.basename(image))
        os.symlink(mask, eval_set / "test" / "masks" / os.path.basename(mask))
    baseline = os.path.join(EXPORT_DIR, "card_segmentation_fp32.onnx")   # any earlier export
    args = export.get_args_parser().parse_args([str(ckpt), "--data-path", tiny_dataset, "--output-dir", str(out),
                                                "--gate-images", "2", "--latency-runs", "1",
                                                "--eval-data-path", os.path.realpath(eval_set),
                                                "--extra-eval", f"again={eval_set}", "--extra-eval-note",
                                                "again=the same three images", "--baseline", baseline])
    meta = export.main(args)
    names = sorted(os.listdir(out))
    assert names == ["README.md", "card_segmentation.json", "card_segmentation.onnx", "card_segmentation_fp32.onnx"]
    assert [f["precision"] for f in meta["files"]] == ["fp16", "fp32"]
    assert os.path.getsize(out / "card_segmentation.onnx") < 0.6 * os.path.getsize(out / "card_segmentation_fp32.onnx")
    assert (out / "README.md").read_text() == model_card.render_model_card(str(out))
    for f in meta["files"]:
        # Recorded as a public path: outside the repository, the folder's name alone.
        assert f["test_metrics"]["images"] == 3 and f["test_metrics"]["dataset"] == "eval"
        # The named split is scored like the test split; the baseline on both, in the same command.
        assert f["extra_metrics"]["again"]["iou"] == f["test_metrics"]["iou"]
    base = meta["baseline"]
    assert base["sha256"] == sha256(baseline) and set(base["extra_metrics"]) == {"test", "again"}
    from segmentation.evaluation import evaluate_model
    again = evaluate_model(baseline, str(eval_set), quiet=True)["iou"]
    assert base["extra_metrics"]["again"]["iou"] == round(again, export.METRIC_DIGITS)
    card = (out / "README.md").read_text()
    assert "| again (3 images) |" in card
    with pytest.raises(DataError, match="expected NAME=DIR"):
        export.main(export.get_args_parser().parse_args([str(ckpt), "--extra-eval", str(eval_set)]))


def _split_of(root, samples):
    """A test split of (name, image, mask) written as <root>/test/{images,masks}; train is left empty."""
    for sub in ("images", "masks"):
        os.makedirs(os.path.join(root, "test", sub), exist_ok=True)
    for name, image, mask in samples:
        cv2.imwrite(os.path.join(root, "test", "images", name + ".jpg"), image[..., ::-1])
        cv2.imwrite(os.path.join(root, "test", "masks", name + ".png"), mask * 255)
    return str(root)


def test_gate_images_are_chosen_by_the_mask_not_the_file_name(tiny_dataset, tmp_path):
    cards = [(image, mask) for image, mask in (load_sample(*s) for s in find_samples(tiny_dataset, "test"))
             if mask.any()][:3]
    table = np.random.default_rng(0).integers(0, 256, (640, 480, 3), dtype=np.uint8)
    # First in the split, a card-free frame whose name does not say so; last, a card under a name that does.
    root = _split_of(tmp_path / "ds", [("aaa_table", table, np.zeros((640, 480), np.uint8)),
                                       ("card_1", *cards[0]), ("card_2", *cards[1]), ("negative_3", *cards[2])])
    images = segmentation_export.gate_images(root, 3)
    assert images.dtype == np.uint8 and images.shape == (3, 640, 480, 3)
    expected = [load_sample(f"{root}/test/images/{n}.jpg", f"{root}/test/masks/{n}.png")[0]
                for n in ("card_1", "card_2", "negative_3")]
    np.testing.assert_array_equal(images, np.stack(expected))


def test_a_split_without_a_card_cannot_feed_the_gate(small_model, tmp_path):
    empty = np.zeros((640, 480), np.uint8)
    frames = np.random.default_rng(0).integers(0, 256, (2, 640, 480, 3), dtype=np.uint8)
    root = _split_of(tmp_path / "ds", [("card_a", frames[0], empty), ("card_b", frames[1], empty)])
    masks = os.path.join(root, "test", "masks")
    with pytest.raises(DataError, match=re.escape(masks)):
        segmentation_export.gate_images(root)
    # export.py stops there, before writing anything.
    ckpt = tmp_path / "best.pt"
    torch.save({"model": small_model.state_dict(), "args": {}, "history": []}, ckpt)
    with pytest.raises(DataError, match=re.escape(masks)):
        export.main(export.get_args_parser().parse_args([str(ckpt), "--data-path", root,
                                                         "--output-dir", str(tmp_path / "out")]))
    assert not (tmp_path / "out").exists()


# ----------------------------------------------------------------------------- the committed model

# The deployed model (the web app's and scan.py's): the pruned one, at the mission's path.
COMMITTED = os.path.join(EXPORT_DIR, "card_segmentation.onnx")
COMMITTED_FP32 = os.path.join(EXPORT_DIR, "card_segmentation_fp32.onnx")
# The unpruned model it was pruned from.
COMMITTED_FULL = os.path.join(EXPORT_DIR, "card_segmentation_full.onnx")
COMMITTED_FULL_FP32 = os.path.join(EXPORT_DIR, "card_segmentation_full_fp32.onnx")


@pytest.mark.parametrize("path", [COMMITTED, COMMITTED_FP32, COMMITTED_FULL, COMMITTED_FULL_FP32])
def test_committed_model_contract(path):
    assert os.path.isfile(path), f"{path} is missing: the repository must ship the trained model"
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (inp,), (out,) = sess.get_inputs(), sess.get_outputs()
    assert (inp.name, inp.shape, inp.type) == ("image", [1, 3, 640, 480], "tensor(float)")
    assert (out.name, out.shape, out.type) == ("mask", [1, 1, 640, 480], "tensor(float)")


@pytest.mark.parametrize("path", [COMMITTED, COMMITTED_FP32, COMMITTED_FULL, COMMITTED_FULL_FP32])
def test_committed_model_has_the_rewritten_head(path):
    ops = [n.op_type for n in onnx.load(path).graph.node]
    assert "Softmax" not in ops and "Sigmoid" in ops, f"{path}: exported before the head rewrite; re-export it"


def test_committed_model_is_fp16_small_and_the_pruned_one():
    """card_segmentation.onnx is FP16 and the pruned model: fewer parameters than the full one, whose
    checkpoint it names as its source."""
    proto = onnx.load(COMMITTED)
    dtypes = {init.data_type for init in proto.graph.initializer if len(init.dims) == 4}
    assert dtypes == {onnx.TensorProto.FLOAT16}
    assert os.path.getsize(COMMITTED) <= 4 * 1024 * 1024 < os.path.getsize(COMMITTED_FULL)
    with open(os.path.join(EXPORT_DIR, "card_segmentation.json")) as f:
        meta = json.load(f)
    assert meta["checkpoint"] == "card_segmentation_pruned30.pt" and meta["training"]["pruning"]["ratio"] == 0.3


@pytest.fixture(scope="module")
def unseen_frames(tmp_path_factory):
    """6 test frames of a seed the committed models never saw."""
    path = tmp_path_factory.mktemp("unseen")
    make_dataset(path, 0, 6, seed=987654, workers=1)
    return str(path)


@pytest.mark.parametrize("path", [COMMITTED, COMMITTED_FULL])
def test_committed_model_segments_a_fresh_image(unseen_frames, path):
    samples = [s for s in find_samples(unseen_frames, "test") if "negative" not in s[0]]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    inter = union = 0
    for img_path, mask_path in samples[:4]:
        image, truth = load_sample(img_path, mask_path)
        x = image.transpose(2, 0, 1)[None].astype(np.float32) / 255
        pred = sess.run(None, {"image": x})[0][0, 0] >= 0.5
        inter += int((pred & (truth == 1)).sum())
        union += int((pred | (truth == 1)).sum())
    assert inter / union >= 0.9


def test_committed_model_card_is_what_export_writes():
    with open(os.path.join(EXPORT_DIR, "README.md")) as f:
        assert f.read() == model_card.render_model_card(EXPORT_DIR)
    metas = sorted(f for f in os.listdir(EXPORT_DIR) if f.endswith(".json") and f != model_card.WASM_BENCHMARK)
    assert {"card_segmentation.json", "card_segmentation_full.json", "card_corners.json"} <= set(metas)
    for name in metas:
        with open(os.path.join(EXPORT_DIR, name)) as f:
            meta = json.load(f)
        for entry in meta["files"]:
            assert sha256(os.path.join(EXPORT_DIR, entry["file"])) == entry["sha256"], entry["file"]


def test_committed_corner_model_contract():
    path = os.path.join(EXPORT_DIR, "card_corners.onnx")
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert (inp.name, inp.shape, inp.type) == ("images", [1, 3, 640, 480], "tensor(float)")
    outputs = [("output0", [1, 17, 6300], "tensor(float)"), ("corners", [1, 4, 2], "tensor(float)"),
               ("score", [1], "tensor(float)"), ("visibility", [1, 4], "tensor(float)"),
               ("fallback", [1, 4], "tensor(float)"), ("cards", [1, 12, 4, 2], "tensor(float)"),
               ("card_scores", [1, 12], "tensor(float)")]
    assert [(o.name, o.shape, o.type) for o in sess.get_outputs()] == outputs
    # The refiner alone, on any number of quads of one frame (the app's and scan.py's second stage).
    refiner = ort.InferenceSession(os.path.join(EXPORT_DIR, "card_corners_refiner.onnx"),
                                   providers=["CPUExecutionProvider"])
    assert [(i.name, i.shape) for i in refiner.get_inputs()] == [("images", [1, 3, 640, 480]),
                                                                  ("quads", ["cards", 4, 2])]
    assert [(o.name, o.shape) for o in refiner.get_outputs()] == [
        ("corners", ["cards", 4, 2]), ("valid", ["cards"]), ("visibility", ["cards", 4]), ("fallback", ["cards", 4])]
    # The detector's convolutions in FP16, the refiner's in FP32 (sub-pixel coordinates); the twin
    # is FP32 throughout, with the same contract.
    proto = onnx.load(path)
    kernels = [i for i in proto.graph.initializer if len(i.dims) == 4]
    assert {i.data_type for i in kernels if not i.name.startswith("refine/")} == {onnx.TensorProto.FLOAT16}
    assert {i.data_type for i in kernels if i.name.startswith("refine/")} == {onnx.TensorProto.FLOAT}
    twin = os.path.join(EXPORT_DIR, "card_corners_fp32.onnx")
    sess = ort.InferenceSession(twin, providers=["CPUExecutionProvider"])
    assert [(o.name, o.shape, o.type) for o in sess.get_outputs()] == outputs
    assert {i.data_type for i in onnx.load(twin).graph.initializer if len(i.dims) == 4} == {onnx.TensorProto.FLOAT}


def test_committed_corner_model_refines_corners_on_unseen_images(tmp_path):
    """The committed card_corners.onnx on 8 freshly rendered frames (a seed no training used): the
    refined corners beat the detector's, and most land within 5 px (the model card has the
    full-split figures)."""
    from evaluate_corners import evaluate_corner_model

    make_dataset(tmp_path, 0, 8, seed=5151, workers=1)
    path = os.path.join(EXPORT_DIR, "card_corners.onnx")
    refined, _ = evaluate_corner_model(path, str(tmp_path), quiet=True)
    detector, _ = evaluate_corner_model(path, str(tmp_path), quiet=True, refine=False)
    assert refined["refined"] and not detector["refined"]
    assert refined["missed_cards"] == 0 and refined["corners"] >= 20
    assert refined["mean_px"] < detector["mean_px"] and refined["pct_within_5px"] >= 85


def test_committed_corner_checkpoints_match_the_committed_onnx(tmp_path):
    """The PyTorch path (detector .pt + refiner .pt, what evaluate_corners.py runs on a .pt) gives the
    committed file's corners on frames with a card: the export's own parity gate, rerun."""
    from corners.predict import load_pose_model
    from corners.refine import DEFAULT_REFINER, load_refiner
    from export_corners import gate_images, parity_gate

    make_dataset(tmp_path, 0, 4, seed=5152, workers=1)
    model = load_pose_model(os.path.join(os.path.dirname(EXPORT_DIR), "checkpoints", "card_corners.pt"))
    gate = parity_gate(os.path.join(EXPORT_DIR, "card_corners.onnx"), model.model.float().eval(),
                       gate_images(str(tmp_path), 4), load_refiner(DEFAULT_REFINER))
    assert gate["refined_found_mismatches"] == 0 and gate["max_refined_corner_diff_px"] <= 1.0


PRUNING = {"ratio": 0.3, "iterative_steps": 3, "finetune_epochs": 1, "base_macs": 2.4e9, "macs": 1.2e9,
           "base_params": 3.2e6, "params": 1.6e6, "iou_finetuned": 0.95}


def fine_tuned_pruned_checkpoint() -> dict:
    """What train.py saves when it fine-tunes a prune.py checkpoint (weights left out)."""
    return {"pruning": PRUNING, "source_checkpoint": "full.pt", "command": "python train/train.py --dice-weight 0",
            "history": [{"epoch_s": 600}, {"epoch_s": 660}], "best_iou": 0.95, "best_epoch": 1,
            "train_images": 5000, "val_images": 1200, "pretrained_backbone": "initialised from best.pt",
            "args": {"lr": 1e-4, "max_train_images": 0, "dice_weight": 0.0}}


def test_checkpoint_summary_describes_the_last_run_of_a_pruned_model():
    """prune.py's checkpoint is described by its pruning run; a train.py fine-tune of it by its own
    run (command, epochs, validation, loss), keeping the pruning record and what it was pruned from."""
    pruned = {"pruning": PRUNING, "source_checkpoint": "full.pt", "history": [{"epoch_s": 600}],
              "args": {"lr": 5e-4, "max_train_images": 800, "dice_weight": 1.0}}
    summary = segmentation_export.checkpoint_summary(pruned)
    assert summary["max_train_images"] == 800 and "command" not in summary and "epochs_run" not in summary
    summary = segmentation_export.checkpoint_summary(fine_tuned_pruned_checkpoint())
    assert summary["command"] == "python train/train.py --dice-weight 0" and summary["epochs_run"] == 2
    assert summary["train_time_min"] == 21.0 and summary["best_val_iou"] == 0.95 and summary["val_images"] == 1200
    assert summary["dice_weight"] == 0.0 and summary["pruning"] == PRUNING and summary["source_checkpoint"] == "full.pt"
    assert "max_train_images" not in summary and "epochs_planned" not in summary


def test_model_card_says_a_best_checkpoint_stopped_before_the_run_did(tmp_path):
    """A best.pt written at the first of two epochs carries one epoch of history: the card says the run
    planned two, and that the training time is that of the epochs in the checkpoint."""
    ckpt = fine_tuned_pruned_checkpoint() | {"history": [{"epoch_s": 600}], "best_epoch": 0}
    ckpt["args"] = ckpt["args"] | {"epochs": 2}
    summary = segmentation_export.checkpoint_summary(ckpt)
    assert summary["epochs_run"] == 1 and summary["epochs_planned"] == 2
    card = render_training_card(tmp_path, summary)
    assert ": 1 epoch(s) of 2 planned, 10.0 min" in card
    ckpt["history"] = [{"epoch_s": 600}, {"epoch_s": 660}]   # the run's last epoch: nothing to add
    summary = segmentation_export.checkpoint_summary(ckpt)
    assert "epochs_planned" not in summary
    assert ": 2 epoch(s), 21.0 min" in render_training_card(tmp_path, summary)


def test_model_card_prints_the_last_run_in_a_few_lines(tmp_path):
    summary = segmentation_export.checkpoint_summary(fine_tuned_pruned_checkpoint())
    card = render_training_card(tmp_path, summary)
    training = card[card.index("## Training"):card.index("## Licence")]
    for line in ("  - last run: `python train/train.py --dice-weight 0`: 2 epoch(s), 21.0 min, best validation IoU "
                 "0.9500 at epoch 2", "  - pruned by `train/prune.py` (ratio 0.3) from `full.pt`: Conv MACs 2.40 G -> "
                 "1.20 G"):
        assert line in training, line
    model_lines = [line for line in training.splitlines() if line.startswith(("- ", "  - "))]
    assert len(model_lines) <= 5


def test_model_card_times_only_the_files_that_were_timed(tmp_path):
    """A re-exported file (new hash) does not inherit the WASM times of the file benchmark.py timed; the
    speed table names the benchmark's command and machine."""
    metas = [{"files": [{"file": "m.onnx", "sha256": "aaa"}, {"file": "m_fp32.onnx", "sha256": "bbb"}]}]
    bench = {"machine": "test machine", "command": "python demo/benchmark.py",
             "files": {"m": {"sha256": "aaa"}, "m_fp32": {"sha256": "old"}},
             "models": [{"model": "m", "threads": 2, "median_ms": 10.0},
                        {"model": "m_fp32", "threads": 2, "median_ms": 20.0}],
             "native": [{"model": "m", "threads": 2, "median_ms": 3.0}]}
    (tmp_path / model_card.WASM_BENCHMARK).write_text(json.dumps(bench))
    table = "\n".join(model_card._speed(metas, str(tmp_path)))
    assert "| `m.onnx` | 10.0 | 3.0 |" in table
    assert "m_fp32" not in table
    assert "`python demo/benchmark.py`; test machine" in table
