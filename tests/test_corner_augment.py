"""Keypoint-aware augmentation of the corner model: the keypoints follow the pixels through every
transform, Ultralytics' letterbox and the DataLoader workers; the fast ISO noise and Poisson draws."""

import json
import math
import os

import albumentations as A
import cv2
import numpy as np
import pytest
import torch

from conftest import CARD, write_dataset
from corners import augment as pose_augment
from corners.data import build_pose_dataset, canonical_order


def _dot_image(corners, radius=4):
    img = np.zeros((640, 480, 3), np.uint8)
    for x, y in corners:
        cv2.circle(img, (int(round(x * 16)), int(round(y * 16))), radius * 16, (255, 255, 255), -1, cv2.LINE_AA,
                   shift=4)
    return img


def _dot_offsets(image, corners, margin=10):
    """Distance from each in-frame corner to the centroid of the bright dot around it."""
    g = image.max(2).astype(float) if image.ndim == 3 else image.astype(float)
    g = np.where(g > 60, g, 0)
    h, w = g.shape
    out = []
    for x, y in corners:
        if not (margin < x < w - margin and margin < y < h - margin):
            continue
        ys, xs = np.mgrid[int(y) - 8:int(y) + 9, int(x) - 8:int(x) + 9]
        p = g[ys, xs]
        assert p.sum() > 0, f"no dot near the keypoint ({x:.1f}, {y:.1f})"
        out.append(math.hypot((p * xs).sum() / p.sum() - x, (p * ys).sum() / p.sum() - y))
    return out


def _leaves(t):
    return [x for c in t.transforms for x in (_leaves(c) if isinstance(c, A.BaseCompose) else [c])]


@pytest.mark.parametrize("index", range(len(_leaves(pose_augment.get_corner_transforms()))))
def test_keypoints_follow_the_pixels_through_every_transform(index):
    leaf = _leaves(pose_augment.get_corner_transforms())[index]
    leaf.p = 1.0
    t = A.Compose([leaf], keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))
    t.set_random_seed(index)
    img = _dot_image(CARD)
    worst = 0.0
    for _ in range(8):
        out, moved, _ = pose_augment.augment(t, img, CARD)
        assert out.shape == img.shape
        worst = max([worst] + _dot_offsets(out, moved))
    assert worst <= 1.5, f"{type(leaf).__name__}: dot {worst:.2f} px from its keypoint"


@pytest.mark.parametrize("lam", [0.02, 0.3, 2.5, 20.0])
def test_poisson_small_draws_the_poisson_distribution(lam):
    k = pose_augment.poisson_small(np.random.default_rng(0), lam, (400, 500))
    assert k.dtype == np.float32 and k.shape == (400, 500) and (k == np.round(k)).all()
    n = k.size
    assert k.mean() == pytest.approx(lam, abs=5 * math.sqrt(lam / n))
    assert k.var() == pytest.approx(lam, rel=0.05)
    for i in range(3):   # P(k = i), within 5 standard errors
        p = math.exp(-lam) * lam**i / math.factorial(i)
        assert (k == i).mean() == pytest.approx(p, abs=5 * math.sqrt(p * (1 - p) / n) + 1e-6)


def test_fast_iso_noise_matches_albumentations_iso_noise():
    """Same parameters, same noise statistics, a fraction of the time (benchmark_training.py)."""
    img = _dot_image(CARD)
    img[..., 1] = np.linspace(20, 200, img.shape[1], dtype=np.uint8)[None]     # some texture and colour
    stats = {}
    for cls in (A.ISONoise, pose_augment.FastISONoise):
        t = cls(color_shift=(0.01, 0.05), intensity=(0.5, 0.5), p=1.0)
        diffs = []
        for seed in range(6):
            t.set_random_seed(seed)
            out = t(image=img)["image"]
            assert out.dtype == np.uint8 and out.shape == img.shape
            diffs.append(out.astype(np.float32) - img)
        d = np.stack(diffs)
        stats[cls] = (d.mean(), d.std(), (np.abs(d).max(-1) > 1).mean())
    (m0, s0, f0), (m1, s1, f1) = stats.values()
    assert m0 > 1 and m1 == pytest.approx(m0, rel=0.05)
    assert s1 == pytest.approx(s0, rel=0.05) and f1 == pytest.approx(f0, rel=0.05)
    with pytest.raises(TypeError, match="uint8"):
        pose_augment.FastISONoise(p=1.0)(image=img.astype(np.float32) / 255)


def test_flip_and_rotation_keep_tl_tr_br_bl_order():
    t = A.Compose([A.HorizontalFlip(p=1.0)], keypoint_params=A.KeypointParams(format="xy", remove_invisible=False))
    _, moved, _ = pose_augment.augment(t, _dot_image(CARD), CARD)
    # Mirrored: the old top-right is the new top-left, and so on (flip_idx), in image space.
    np.testing.assert_allclose(moved[0], [479 - CARD[1, 0], CARD[1, 1]], atol=1.0)
    assert moved[:, 0].argmin() in (0, 3) and moved.sum(1).argmin() == 0


def test_training_dataset_keypoints_follow_the_pixels(tmp_path):
    """The whole path a training image takes: our pipeline, then Ultralytics' letterbox + format."""
    from ultralytics.cfg import get_cfg
    from ultralytics.data.utils import check_det_dataset

    import train_corners
    from corners.trainer import CornerPoseDataset

    rng = np.random.default_rng(0)
    entries = {}
    root = tmp_path / "dots"
    for s in ("train", "test"):
        os.makedirs(root / s / "images")
        os.makedirs(root / s / "masks")
    for i in range(6):
        c = CARD + rng.uniform(-30, 30, (4, 2))
        cv2.imwrite(str(root / "train" / "images" / f"{i}.jpg"), _dot_image(c)[..., ::-1],
                    [cv2.IMWRITE_JPEG_QUALITY, 100])
        cv2.imwrite(str(root / "train" / "masks" / f"{i}.png"), np.zeros((640, 480), np.uint8))
        entries[f"{i}.jpg"] = c.tolist()
    cv2.imwrite(str(root / "test" / "images" / "t.jpg"), np.zeros((640, 480, 3), np.uint8))
    cv2.imwrite(str(root / "test" / "masks" / "t.png"), np.zeros((640, 480), np.uint8))
    with open(root / "corner_annotations.json", "w") as f:
        json.dump({"train": entries, "test": {"t.jpg": CARD.tolist()}}, f)
    data = check_det_dataset(build_pose_dataset(str(root), str(tmp_path / "cache")))
    hyp = get_cfg(overrides=dict(imgsz=640, task="pose", **train_corners.ULTRALYTICS_AUGMENTATION))
    transform = pose_augment.get_corner_transforms()
    transform.set_random_seed(0)
    ds = CornerPoseDataset(img_path=data["train"], imgsz=640, batch_size=2, augment=True, hyp=hyp, rect=False,
                           stride=32, pad=0.0, task="pose", data=data, corner_transform=transform,
                           true_corners={n: canonical_order(np.array(c)) for n, c in entries.items()})
    offsets = []
    for _ in range(5):
        for i in range(len(ds)):
            item = ds[i]
            assert tuple(item["img"].shape) == (3, 640, 480), "batches keep the exported 640x480 shape"
            img = item["img"].numpy().transpose(1, 2, 0)
            for k in item["keypoints"].numpy():
                vis = k[:, 2] > 0
                xy = k[vis, :2] * [480, 640] - 0.5
                offsets += _dot_offsets(img, xy)
    assert len(offsets) > 40
    assert np.median(offsets) < 0.5 and max(offsets) <= 1.5, (np.median(offsets), max(offsets))


def _one_sample_dataset(tmp_path, corners, transform):
    from ultralytics.cfg import get_cfg
    from ultralytics.data.utils import check_det_dataset

    import train_corners
    from corners.trainer import CornerPoseDataset

    root = write_dataset(tmp_path / "ds", {"a.jpg": corners.tolist()}, images=["a.jpg"])
    data = check_det_dataset(build_pose_dataset(root, str(tmp_path / "cache")))
    hyp = get_cfg(overrides=dict(imgsz=640, task="pose", **train_corners.ULTRALYTICS_AUGMENTATION))
    return CornerPoseDataset(img_path=data["train"], imgsz=640, batch_size=1, augment=True, hyp=hyp, rect=False,
                             stride=32, pad=0.0, task="pose", data=data, corner_transform=transform,
                             true_corners={n: canonical_order(c)[None] for n, c in [("a.jpg", corners)]})


def test_out_of_frame_corners_are_augmented_from_the_annotation_not_the_clipped_label(tmp_path):
    """Label files hold an out-of-frame corner clipped onto the border. Augmenting that point would
    put a shifted-in corner in the wrong place, and clipping can change which corner has the
    smallest x + y, renaming the visible ones after re-sorting."""
    keypoint_params = A.KeypointParams(format="xy", remove_invisible=False)
    # Clipping (-150, 200) to (0, 200) would make (150, 20) the smallest x + y.
    truth = np.array([[-150.0, 200], [150, 20], [400, 300], [100, 500]])
    ds = _one_sample_dataset(tmp_path / "a", truth, A.Compose([], keypoint_params=keypoint_params))
    k = ds[0]["keypoints"].numpy()[0]
    assert k[0, 2] == 0 and (k[1:, 2] > 0).all()
    np.testing.assert_allclose(k[1:, :2] * [480, 640] - 0.5, truth[1:], atol=0.5)

    off = CARD.copy()
    off[0] = [-40.0, 110.0]                       # top-left 40 px left of the frame
    shift = A.Compose([A.Affine(translate_px={"x": 60, "y": 0}, p=1.0)], keypoint_params=keypoint_params)
    k = _one_sample_dataset(tmp_path / "b", off, shift)[0]["keypoints"].numpy()[0]
    assert (k[:, 2] > 0).all(), "shifted into view, the corner is visible at its true place"
    np.testing.assert_allclose(k[:, :2] * [480, 640] - 0.5, off + [60, 0], atol=1.0)


def test_dataloader_workers_draw_different_reproducible_augmentations(tmp_path):
    """Each worker holds a copy of the Compose and its random state; Ultralytics' worker seeding
    does not reach Albumentations' generators, so without reseeding every worker drew the same
    augmentations in the same order. The same image twice, one per worker, must differ, and a
    second loader with the same generator seed must draw the same again."""
    ds = _one_sample_dataset(tmp_path, CARD, pose_augment.get_corner_transforms())

    def draw():
        loader = torch.utils.data.DataLoader(ds, batch_size=1, sampler=[0, 0], num_workers=2,
                                             collate_fn=lambda b: b[0], generator=torch.Generator().manual_seed(0))
        return [(item["img"], item["keypoints"]) for item in loader]

    (img_a, kpt_a), (img_b, kpt_b) = draw()
    assert not torch.equal(img_a, img_b) and not torch.equal(kpt_a, kpt_b)
    again = draw()
    assert torch.equal(again[0][0], img_a) and torch.equal(again[1][1], kpt_b)

