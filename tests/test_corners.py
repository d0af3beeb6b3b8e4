"""Corner model: annotation conversion, keypoint-aware augmentation, metrics, training with the
corner-error plateau (and its resume), export + parity, preview."""

import csv
import json
import math
import os
import shutil
import socket

import cv2
import numpy as np
import pytest
import torch

os.environ["YOLO_OFFLINE"] = "1"

import albumentations as A  # noqa: E402

from common import DataError  # noqa: E402
from corners import augment as pose_augment  # noqa: E402
from corners.data import (  # noqa: E402
    FLIP_IDX,
    KPT_SHAPE,
    METRIC_OKS_SIGMA,
    build_pose_dataset,
    canonical_order,
    corner_samples,
    label_line,
    load_corner_annotations,
)
from corners.metrics import corner_errors, decode, summarize  # noqa: E402

CARD = np.array([[100.0, 120.0], [380.0, 130.0], [370.0, 500.0], [110.0, 490.0]])


def write_dataset(root, entries, images=None, split="train", other_annotated=True):
    """A hand-made dataset: black 480x640 images + the JSON; the other split gets one image
    (annotated with CARD unless other_annotated is False)."""
    names = images if images is not None else list(entries)
    for s in ("train", "test"):
        os.makedirs(os.path.join(root, s, "images"), exist_ok=True)
        os.makedirs(os.path.join(root, s, "masks"), exist_ok=True)
    other = "test" if split == "train" else "train"
    img = np.zeros((640, 480, 3), np.uint8)
    for s, n in [(split, n) for n in names] + [(other, "other.jpg")]:
        cv2.imwrite(os.path.join(root, s, "images", n), img)
        cv2.imwrite(os.path.join(root, s, "masks", os.path.splitext(n)[0] + ".png"), img[..., 0])
    with open(os.path.join(root, "corner_annotations.json"), "w") as f:
        json.dump({split: entries, other: {"other.jpg": CARD.tolist()} if other_annotated else {}}, f)
    return str(root)


# ----------------------------------------------------------------------------- conversion

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
    ('{"train": {"a.jpg": [[1, 2], [3, 4], [5, 6]]}}', '"train" -> "a.jpg": expected exactly 4'),
    ('{"train": {"a.jpg": [[1, 2], [3, 4], [5, 6], [7]]}}', '"train" -> "a.jpg": expected 4'),
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


# ----------------------------------------------------------------------------- augmentation

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
                             true_corners={n: canonical_order(c) for n, c in [("a.jpg", corners)]})


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


# ----------------------------------------------------------------------------- metrics

def test_metrics_on_hand_made_cases_count_a_missed_card_as_failure():
    truth = np.stack([CARD, CARD, CARD])
    pred = truth.copy()
    pred[0, :, 0] += 3.0                          # image 0: every corner 3 px off
    pred[1, 0, 1] += 12.0                         # image 1: top-left 12 px off, others exact
    found = np.array([True, True, False])         # image 2: missed
    err = corner_errors(pred, found, truth)
    visible = np.ones((3, 4), bool)
    m = summarize(err, visible, negatives_found=np.array([False, True]))
    assert m["corners"] == 12 and m["missed_cards"] == 1
    assert m["pct_within_5px"] == pytest.approx(100 * 7 / 12)
    assert m["pct_within_10px"] == pytest.approx(100 * 7 / 12)
    assert m["pct_within_20px"] == pytest.approx(100 * 8 / 12)
    assert m["top_left_pct_within_5px"] == pytest.approx(100 / 3)
    assert m["pct_images_all_within_5px"] == pytest.approx(100 / 3)
    assert m["pct_images_all_within_20px"] == pytest.approx(200 / 3)
    assert m["mean_px"] == pytest.approx((4 * 3 + 12) / 8)     # over the corners that were found
    assert m["capped_mean_px"] == pytest.approx((4 * 3 + 12 + 4 * 50) / 12)
    assert m["false_positive_pct"] == pytest.approx(50.0)
    # A corner outside the frame is left out of every denominator, and counted.
    visible[1, 0] = False
    m = summarize(err, visible)
    assert m["corners"] == 11 and m["corners_outside_frame"] == 1
    assert m["pct_within_5px"] == pytest.approx(100 * 7 / 11)


def test_decode_weighted_corners_and_threshold():
    out = np.zeros((2, 17, 6), np.float32)
    out[:, 0:4] = np.array([240, 320, 200, 300], np.float32)[None, :, None]
    kp = np.concatenate([CARD + 0.5, np.ones((4, 1))], 1).reshape(-1)
    out[:, 5:] = kp[None, :, None]
    out[0, 4] = [0.1, 0.9, 0.85, 0.2, 0.0, 0.0]
    out[0, 5, 2] += 10.0                          # second anchor's x1 is 10 px off, with weight 0.85
    out[1, 4] = 0.1                               # nothing above the threshold
    corners, score, found = decode(out, conf=0.25)
    assert found.tolist() == [True, False] and score[0] == pytest.approx(0.9)
    assert corners[0, 0, 0] == pytest.approx(CARD[0, 0] + 10 * 0.85 / 1.75, abs=1e-4)
    np.testing.assert_allclose(corners[0, 1:], CARD[1:], atol=1e-4)


# ----------------------------------------------------------------------------- loss

def _kpt_loss_grad(loss, error_px, area_px=300.0 * 420.0, stride=8.0):
    """Gradient of the keypoint loss w.r.t. one corner's x, for a corner error_px off in x (grid units
    as Ultralytics passes them: pixels / stride). The other three corners are exact."""
    gt = torch.zeros(1, 4, 3)
    gt[..., 2] = 2.0
    pred = gt.clone()
    pred[0, 0, 0] = error_px / stride
    pred.requires_grad_(True)
    value = loss(pred, gt, gt[..., 2] != 0, torch.tensor([[area_px / stride**2]]))
    value.backward()
    return float(value.detach()), float(pred.grad[0, 0, 0]) / stride     # per px


def test_l1_term_pulls_as_hard_on_the_last_pixels_as_on_far_corners():
    from ultralytics.utils.loss import KeypointLoss

    from corners.data import LOSS_OKS_SIGMA
    from corners.loss import CornerKeypointLoss

    sigmas = torch.full((4,), LOSS_OKS_SIGMA)
    oks, ours, off = KeypointLoss(sigmas), CornerKeypointLoss(sigmas, 1.0), CornerKeypointLoss(sigmas, 0.0)
    for e in (1.0, 5.0, 50.0):
        assert _kpt_loss_grad(off, e) == pytest.approx(_kpt_loss_grad(oks, e))   # gain 0: Ultralytics' loss
    # Ultralytics' OKS loss at the 0.25 width hardly notices the last pixels: its pull at 2 px is a
    # twentieth of that at 40 px. The L1 term pulls the same at both, many times harder than OKS at 2 px.
    assert _kpt_loss_grad(oks, 2.0)[1] < 0.06 * _kpt_loss_grad(oks, 40.0)[1]
    l1_2 = _kpt_loss_grad(ours, 2.0)[1] - _kpt_loss_grad(oks, 2.0)[1]
    l1_40 = _kpt_loss_grad(ours, 40.0)[1] - _kpt_loss_grad(oks, 40.0)[1]
    assert l1_2 == pytest.approx(l1_40, rel=1e-4) and l1_2 > 20 * _kpt_loss_grad(oks, 2.0)[1]
    assert _kpt_loss_grad(ours, -2.0)[1] < 0 < _kpt_loss_grad(ours, 2.0)[1]       # towards the truth
    # A corner outside the frame (visibility 0) gets no pull at all.
    gt = torch.zeros(1, 4, 3)
    gt[0, 1:, 2] = 2.0
    pred = torch.full((1, 4, 3), 3.0, requires_grad=True)
    ours(pred, gt, gt[..., 2] != 0, torch.tensor([[2000.0]])).backward()
    assert pred.grad[0, 0].abs().sum() == 0 and pred.grad[0, 1:, :2].abs().sum() > 0


# ----------------------------------------------------------------------------- training

@pytest.fixture(scope="module")
def corner_dataset(tmp_path_factory):
    from conftest import make_dataset

    path = tmp_path_factory.mktemp("corners")
    make_dataset(path, 10, 4)
    return str(path)


def _read_csv(path):
    with open(path) as f:
        return [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.fixture(scope="module")
def trained(corner_dataset, tmp_path_factory):
    """One epoch of train_corners.py on the CPU (the script end to end)."""
    import train_corners

    out = tmp_path_factory.mktemp("corner_runs")
    args = train_corners.get_args_parser().parse_args([
        "--data-path", corner_dataset, "--output-dir", str(out), "--cache-dir", str(out / "cache"), "--epochs", "1",
        "--batch-size", "4", "--workers", "0", "--device", "cpu", "--quiet"])
    attempts = []

    def refuse(*a, **k):
        attempts.append(a[:2])
        raise OSError("network access attempted during corner training")

    # Nothing may reach for the network: no hub, no font or weight downloads, no version checks.
    # Ultralytics caches its font lookup per process, so an earlier test could hide a download.
    from ultralytics.utils.checks import check_font
    check_font.__wrapped__.cache_clear()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket, "getaddrinfo", refuse)
        mp.setattr(socket.socket, "connect", refuse)
        result = train_corners.main(args)
    assert not attempts, attempts
    return result


def test_one_epoch_cpu_training_logs_corner_metrics(trained, corner_dataset):
    assert os.path.isfile(trained["best"]) and os.path.isfile(trained["last"])
    rows = _read_csv(os.path.join(trained["save_dir"], "results.csv"))
    assert len(rows) == 1
    for key in ("corners/capped_mean_px", "corners/pct_within_5px", "corners/lr_factor"):
        assert key in rows[0]
    assert float(rows[0]["corners/capped_mean_px"]) <= 50.0
    assert os.listdir(os.path.join(trained["save_dir"], "tensorboard"))
    with open(os.path.join(trained["save_dir"], "corner_options.json")) as f:
        assert json.load(f)["data_root"] == os.path.realpath(corner_dataset), "what --resume reads back"


def test_resume_reuses_the_saved_loss_gain_and_old_runs_keep_ultralytics_loss():
    import train_corners

    saved = {k: 7 for k in train_corners.TRAINER_OPTIONS} | {"data_root": "/d", "kpt_l1_gain": 0.5}
    assert train_corners.saved_trainer_options(saved)["kpt_l1_gain"] == 0.5
    del saved["kpt_l1_gain"]    # a run from before the L1 term trained with Ultralytics' loss alone
    assert train_corners.saved_trainer_options(saved) == {**{k: 7 for k in train_corners.TRAINER_OPTIONS},
                                                          "kpt_l1_gain": 0.0}


def test_warmup_only_from_scratch_unless_asked():
    import train_corners

    def warmup(*argv):
        return train_corners.warmup_epochs(train_corners.get_args_parser().parse_args(list(argv)))

    assert warmup() == train_corners.WARMUP_EPOCHS_FROM_SCRATCH > 0
    assert warmup("--weights", "x.pt") == 0.0          # no bias-LR kick to a trained checkpoint
    assert warmup("--weights", "x.pt", "--warmup-epochs", "1") == 1.0


def _lf(epoch, epochs, lrf=0.01):
    """Ultralytics' cosine schedule (cos_lr=True), as in ultralytics.utils.one_cycle."""
    return ((1 - math.cos(epoch * math.pi / epochs)) / 2) * (lrf - 1) + 1


class Crash(Exception):
    pass


def test_plateau_lowers_the_lr_the_optimizer_uses_and_survives_resume(corner_dataset, tmp_path):
    """min_delta so large that no epoch counts as a gain: with patience 0 every epoch after the first
    halves the LR. Epoch 3 must run at 0.5x Ultralytics' schedule; a run killed after epoch 3 and
    resumed must run epoch 4 at 0.25x, not at the schedule's own value."""
    from ultralytics import YOLO

    from corners.data import build_pose_dataset as build
    from corners.trainer import make_trainer

    yaml_path = build(corner_dataset, str(tmp_path / "cache"))
    base = make_trainer(corner_dataset, plateau_patience=0, plateau_factor=0.5, min_lr_factor=0.01,
                        stop_patience=100, min_delta=1e9, kpt_l1_gain=0.5)

    class CrashingTrainer(base):
        def __init__(self, *a, **k):
            super().__init__(*a, **k)
            self.add_callback("on_fit_epoch_end", self._crash)

        @staticmethod
        def _crash(trainer):
            if trainer.epoch == 2:       # after epoch 3 was validated and saved
                raise Crash()

    lr0, epochs = 0.01, 4
    common = dict(data=yaml_path, epochs=epochs, batch=4, imgsz=640, device="cpu", workers=0, optimizer="AdamW",
                  lr0=lr0, warmup_epochs=0, cos_lr=True, plots=False, val=True, patience=0, verbose=False,
                  project=str(tmp_path / "runs"), name="plateau", seed=0, augmentations=[], mosaic=0.0)
    with pytest.raises(Crash):
        YOLO("yolo12n-pose.yaml", task="pose").train(trainer=CrashingTrainer, **common)
    save_dir = tmp_path / "runs" / "plateau"
    rows = _read_csv(save_dir / "results.csv")
    assert len(rows) == 3
    for i, want in enumerate([1.0, 1.0, 0.5]):   # factor in force during epochs 1, 2, 3
        assert float(rows[i]["lr/pg0"]) == pytest.approx(lr0 * _lf(i, epochs) * want, rel=1e-3), i
    assert float(rows[2]["corners/lr_factor"]) == 0.25   # decided after epoch 3, applies to epoch 4
    ckpt = torch.load(save_dir / "weights" / "last.pt", map_location="cpu", weights_only=False)
    assert ckpt["optimizer"]["param_groups"][0]["corner_plateau"]["factor"] == 0.25

    resumed = YOLO(str(save_dir / "weights" / "last.pt"), task="pose")
    resumed.train(resume=True, data=yaml_path, trainer=base, device="cpu", workers=0)
    rows = _read_csv(save_dir / "results.csv")
    assert len(rows) == 4
    assert float(rows[3]["lr/pg0"]) == pytest.approx(lr0 * _lf(3, epochs) * 0.25, rel=1e-3)
    # The resumed run trained with our keypoint loss too (corners/loss.py), at the gain it was given.
    from ultralytics.utils.torch_utils import unwrap_model

    from corners.loss import CornerKeypointLoss
    criterion = unwrap_model(resumed.trainer.model).criterion
    assert isinstance(criterion.keypoint_loss, CornerKeypointLoss) and criterion.keypoint_loss.l1_gain == 0.5


# ----------------------------------------------------------------------------- export, evaluation, preview

@pytest.fixture(scope="module")
def refiner_ckpt(corner_dataset, tmp_path_factory):
    """One epoch of train_corner_refiner.py on the CPU (the script end to end)."""
    import train_corner_refiner

    out = tmp_path_factory.mktemp("refiner_run")
    args = train_corner_refiner.get_args_parser().parse_args([
        "--data-path", corner_dataset, "--output-dir", str(out), "--epochs", "1", "--batch-size", "4",
        "--workers", "0", "--device", "cpu", "--quiet"])
    return train_corner_refiner.main(args)


def test_export_passes_the_parity_gate_and_evaluates_like_pytorch(trained, refiner_ckpt, corner_dataset, tmp_path):
    import onnxruntime as ort

    import evaluate_corners
    import export_corners
    from corners.metrics import decode_tensor
    from corners.predict import load_checked, to_input
    from corners.refine import load_refiner, refine_corners

    out = tmp_path / "exported"
    args = export_corners.get_args_parser().parse_args([
        trained["best"], "--output-dir", str(out), "--data-path", corner_dataset, "--latency-runs", "2",
        "--refiner", refiner_ckpt["best"]])
    meta = export_corners.main(args)
    path = out / "card_corners.onnx"
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (inp,) = sess.get_inputs()
    assert (inp.name, inp.type, inp.shape) == ("images", "tensor(float)", [1, 3, 640, 480])
    assert [(o.name, o.type, o.shape) for o in sess.get_outputs()] == [
        ("output0", "tensor(float)", [1, 17, 6300]), ("corners", "tensor(float)", [1, 4, 2]),
        ("score", "tensor(float)", [1])]
    f = meta["files"][0]
    assert f["gate"]["max_corner_diff_px"] <= 1.0 and f["gate"]["max_refined_corner_diff_px"] <= 1.0
    assert f["precision"] == "fp16" and meta["refiner"]["epochs_run"] == 1
    assert "pct_within_5px" in f["test_metrics"] and "pct_within_5px" in f["detector_test_metrics"]
    with open(out / "README.md") as fh:
        card = fh.read()
    assert "## Card corners" in card and "`corners` output" in card and "The detector alone" in card

    # The tiny model finds no card, so the gate compared nothing, and its near-equal anchor scores
    # let FP16 pick another best anchor than FP32. What the merge must get right: `corners` is the
    # refiner applied to the file's own output0, and `score` that output's best confidence.
    refiner = load_refiner(refiner_ckpt["best"])
    for p, _ in corner_samples(corner_dataset, "test"):
        x = to_input(load_checked(p)[None])
        output0, corners, score = sess.run(["output0", "corners", "score"], {"images": x})
        raw, best = decode_tensor(torch.from_numpy(output0))
        with torch.no_grad():
            expected = refine_corners(refiner, torch.from_numpy(x), raw)
        assert np.abs(corners - expected.numpy()).max() < 1e-3 and np.abs(score - best.numpy()).max() < 1e-6

    m_onnx, _ = evaluate_corners.evaluate_corner_model(str(path), corner_dataset, quiet=True)
    m_pt, _ = evaluate_corners.evaluate_corner_model(trained["best"], corner_dataset, quiet=True,
                                                     refiner=refiner_ckpt["best"])
    assert m_onnx["images"] == m_pt["images"] and m_onnx["missed_cards"] == m_pt["missed_cards"]
    assert m_onnx["refined"] and m_pt["refined"]


def test_export_without_refiner_keeps_the_detector_contract(trained, corner_dataset, tmp_path):
    import onnxruntime as ort

    import evaluate_corners
    import export_corners

    args = export_corners.get_args_parser().parse_args([
        trained["best"], "--output-dir", str(tmp_path), "--data-path", corner_dataset, "--latency-runs", "1",
        "--no-refine", "--skip-eval"])
    meta = export_corners.main(args)
    sess = ort.InferenceSession(str(tmp_path / "card_corners.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in sess.get_outputs()] == ["output0"] and meta["refiner"] is None
    # Scoring such a file says the corners were not refined, whatever was asked.
    m, _ = evaluate_corners.evaluate_corner_model(str(tmp_path / "card_corners.onnx"), corner_dataset, quiet=True)
    assert m["refined"] is False
    with pytest.raises(DataError, match="opset 16"):
        export_corners.main(export_corners.get_args_parser().parse_args([
            trained["best"], "--output-dir", str(tmp_path / "o13"), "--data-path", corner_dataset, "--opset", "13"]))


def test_export_refuses_missing_mobile_extras(trained, corner_dataset, tmp_path, monkeypatch):
    import export_corners

    monkeypatch.setattr(export_corners.importlib.util, "find_spec", lambda name: None)
    args = export_corners.get_args_parser().parse_args([trained["best"], "--formats", "onnx,tflite",
                                                        "--output-dir", str(tmp_path), "--data-path", corner_dataset])
    with pytest.raises(DataError, match="pip install litert-torch"):
        export_corners.main(args)
    assert not os.listdir(tmp_path)


def test_evaluate_script_writes_json_and_overlays(trained, refiner_ckpt, corner_dataset, tmp_path):
    import evaluate_corners

    args = evaluate_corners.get_args_parser().parse_args([
        trained["best"], "--data-path", corner_dataset, "--json", str(tmp_path / "m.json"), "--overlays", "3",
        "--refiner", refiner_ckpt["best"]])
    m = evaluate_corners.main(args)
    with open(tmp_path / "m.json") as f:
        saved = json.load(f)
    assert saved["images"] == m["images"] and "pct_within_10px" in saved and saved["refined"] is True
    assert len(os.listdir(tmp_path / "m_overlays")) == 3
    args = evaluate_corners.get_args_parser().parse_args([
        trained["best"], "--data-path", corner_dataset, "--json", str(tmp_path / "d.json"), "--no-refine"])
    assert evaluate_corners.main(args)["refined"] is False


def test_preview_writes_ten_examples(corner_dataset, tmp_path):
    import preview_corner_augmentations as preview

    paths = preview.main(preview.get_args_parser().parse_args(
        ["--data-path", corner_dataset, "--output-dir", str(tmp_path / "p")]))
    assert len(paths) == 10 and all(os.path.getsize(p) > 0 for p in paths)
    assert os.path.isfile(tmp_path / "p" / "grid.jpg")
    shutil.rmtree(tmp_path / "p")


# ----------------------------------------------------------------------------- corner refiner

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
    rows = _read_csv(os.path.join(refiner_ckpt["output_dir"], "metrics.csv"))
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
