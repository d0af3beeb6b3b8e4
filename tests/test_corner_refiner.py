"""The corner refiner: crop geometry, its ONNX stage, train_corner_refiner.py (checkpoints, exact
resume) and its data checks."""

import os

import cv2
import numpy as np
import pytest
import torch
from conftest import read_csv, write_dataset

from common import DataError


def _card_image(quad):
    """Black 480x640 RGB with a white quadrilateral, corners in pixel-centre coordinates."""
    img = np.zeros((640, 480, 3), np.uint8)
    cv2.fillPoly(img, [np.round(np.asarray(quad) * 16).astype(np.int32)], (255, 255, 255), cv2.LINE_AA, shift=4)
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize("augment", [False, True])
def test_refiner_crops_show_every_corner_the_same_way_round_and_target_points_at_it(augment):
    """Each corner's crop has the card towards its bottom right, and the training target is where the
    corner is in the crop: around it, only the bottom-right quadrant is card. The augmentation's
    mirror must swap the target with the pixels."""
    from corners.refine import CROP_PX, extract_crops, rotations
    from train_corner_refiner import photometric_and_mirror

    quad = np.array([[100.0, 120.0], [380.0, 150.0], [350.0, 520.0], [90.0, 480.0]])
    rng = np.random.default_rng(0)
    for _ in range(4):
        jitter = torch.from_numpy(rng.uniform(-15, 15, (4, 2)).astype(np.float32))
        rot = rotations()
        crops = extract_crops(_card_image(quad), (torch.from_numpy(quad).float() + 0.5 - jitter)[None], rot)
        target = (rot.transpose(-1, -2) @ jitter[..., None])[..., 0]
        if augment:
            crops, target = photometric_and_mirror(crops, target, rng)
        for k in range(4):
            cx, cy = (target[k] + (CROP_PX - 1) / 2).tolist()       # the corner, in crop pixel indices

            def at(dx, dy, crop=crops[k], cx=cx, cy=cy):
                return float(crop[:, int(round(cy + dy)), int(round(cx + dx))].mean())
            assert at(5, 5) > at(-5, -5) + 0.3 and at(5, 5) > at(5, -5) + 0.3 and at(5, 5) > at(-5, 5) + 0.3, k


def test_refiner_crops_sample_exactly_where_the_geometry_says():
    """On an image whose pixels hold their own continuous coordinates (x + 0.5, y + 0.5), bilinear
    sampling is exact, so every crop pixel must read centre + R_k @ (column - 31.5, row - 31.5): a
    half-pixel slip or a wrong rotation shows here."""
    from corners.refine import CROP_PX, crop_offsets, extract_crops, rotations

    ys, xs = torch.meshgrid(torch.arange(640.0) + 0.5, torch.arange(480.0) + 0.5, indexing="ij")
    image = torch.stack([xs, ys, torch.zeros_like(xs)])[None]
    centres = torch.tensor([[[100.25, 120.5], [380.0, 150.75], [350.5, 520.0], [90.0, 480.25]]])
    rot = rotations()
    crops = extract_crops(image, centres, rot)                                   # (4, 3, 64, 64)
    expected = centres[0, :, None, :] + crop_offsets() @ rot.transpose(-1, -2)   # (4, 64 * 64, 2)
    got = crops[:, :2].permute(0, 2, 3, 1).reshape(4, CROP_PX * CROP_PX, 2)
    assert torch.allclose(got, expected, atol=1e-3)
    # Crop pixel (31.5, 31.5), between the middle four, is the centre itself.
    assert torch.allclose(got.view(4, CROP_PX, CROP_PX, 2)[:, 31:33, 31:33].mean((1, 2)), centres[0], atol=1e-3)


def test_refine_stage_onnx_matches_pytorch():
    """Decoding + refinement exported to ONNX (what export_corners.py appends to the detector) gives
    PyTorch's corners, including a corner outside the frame that passes through unrefined."""
    import onnxruntime as ort

    from corners import export as corner_export
    from corners.metrics import decode_tensor
    from corners.refine import CornerRefiner, DecodeAndRefine

    torch.manual_seed(0)
    refiner = CornerRefiner().eval()
    quad = np.array([[100.0, 120.0], [380.0, 150.0], [350.0, 520.0], [-20.0, 480.0]])
    images = _card_image(quad)
    output0 = torch.zeros(1, 17, corner_export.NUM_ANCHORS)
    output0[0, :4, :3] = torch.tensor([240.0, 320.0, 300.0, 400.0])[:, None]
    output0[0, 4, :3] = torch.tensor([0.9, 0.85, 0.3])
    for j in range(3):
        kp = torch.from_numpy(quad + 0.5 + j).float()
        output0[0, 5:, j] = torch.cat([kp, torch.ones(4, 1)], 1).reshape(-1)
    with torch.no_grad():
        ref_corners, ref_score = DecodeAndRefine(refiner)(images, output0)
        raw, _ = decode_tensor(output0)
    sess = ort.InferenceSession(corner_export.refine_stage_onnx(refiner, 17).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    corners, score = sess.run(["corners", "score"], {"images": images.numpy(), "output0": output0.numpy()})
    assert np.abs(corners - ref_corners.numpy()).max() < 1e-3 and abs(score[0] - 0.9) < 1e-6
    assert torch.equal(ref_corners[0, 3], raw[0, 3]), "a corner outside the frame is not refined"
    assert not torch.equal(ref_corners[0, :3], raw[0, :3])


def test_refiner_training_writes_checkpoints_and_loads(refiner_ckpt, tmp_path):
    from corners.refine import CornerRefiner, load_refiner

    assert os.path.isfile(refiner_ckpt["best"]) and os.path.isfile(refiner_ckpt["last"])
    rows = read_csv(os.path.join(refiner_ckpt["output_dir"], "metrics.csv"))
    assert len(rows) == 1 and float(rows[0]["val_jitter_mean_px"]) > 0
    assert os.listdir(os.path.join(refiner_ckpt["output_dir"], "tensorboard"))
    assert isinstance(load_refiner(refiner_ckpt["best"]), CornerRefiner)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(DataError, match="bad.pt"):
        load_refiner(str(bad))


def test_refiner_resume_continues_an_interrupted_run_exactly(corner_dataset, tmp_path, monkeypatch):
    """A run killed in its second epoch and resumed from last.pt ends exactly like the same run left
    alone: same schedule, data and weights (nothing but --resume given again)."""
    import train_corner_refiner as tcr

    def run(*extra):
        return tcr.main(tcr.get_args_parser().parse_args(["--workers", "0", "--device", "cpu", "--quiet", *extra]))
    start = ["--data-path", corner_dataset, "--batch-size", "4", "--epochs", "2"]
    full = run(*start, "--output-dir", str(tmp_path / "full"))

    evaluate, calls = tcr.evaluate, []

    def killed_in_epoch_1(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return evaluate(*a, **k)
    monkeypatch.setattr(tcr, "evaluate", killed_in_epoch_1)
    with pytest.raises(KeyboardInterrupt):
        run(*start, "--output-dir", str(tmp_path / "cut"))
    monkeypatch.setattr(tcr, "evaluate", evaluate)

    last = str(tmp_path / "cut" / "last.pt")
    with pytest.raises(DataError, match="--epochs 2"):
        run("--resume", last, "--epochs", "5")
    resumed = run("--resume", last)
    assert [r["epoch"] for r in resumed["history"]] == [0, 1]
    for key in ("lr", "train_loss", "val_mean_px"):
        assert resumed["history"][1][key] == pytest.approx(full["history"][1][key], rel=1e-4), key
    with pytest.raises(DataError, match="not a train_corner_refiner.py last.pt"):
        run("--resume", full["best"])


def test_refiner_refuses_a_dataset_without_corners(tmp_path):
    import train_corner_refiner

    write_dataset(tmp_path, {}, images=["a.jpg"], other_annotated=False)
    with pytest.raises(DataError, match="no annotated corners"):
        train_corner_refiner.CornerCrops(str(tmp_path), "train", 6.0, augment=False, seed=0)
