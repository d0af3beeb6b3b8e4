"""The corner refiner: crop geometry, its ONNX stage, train_corner_refiner.py (checkpoints, exact
resume) and its data checks."""

import os

import cv2
import numpy as np
import pytest
import torch

from common import DataError
from conftest import read_csv, write_dataset


def _card_image(quad):
    """Black 480x640 RGB with a white quadrilateral, corners in pixel-centre coordinates."""
    img = np.zeros((640, 480, 3), np.uint8)
    cv2.fillPoly(img, [np.round(np.asarray(quad) * 16).astype(np.int32)], (255, 255, 255), cv2.LINE_AA, shift=4)
    return torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255


@pytest.mark.parametrize("augment", [False, True])
@pytest.mark.parametrize("spacing", [1.0, 1.5, 2.0])
def test_refiner_crops_show_every_corner_the_same_way_round_and_target_points_at_it(augment, spacing):
    """Each corner's crop, fine or coarse, has the card towards its bottom right, and the training
    target is where the corner is in the crop: around it, only the bottom-right quadrant is card. The
    augmentation's mirror must swap the target with the pixels."""
    from corners.refine import CROP_PX, extract_crops, rotations
    from train_corner_refiner import max_jitter_px, photometric_and_mirror

    quad = np.array([[100.0, 120.0], [380.0, 150.0], [350.0, 520.0], [90.0, 480.0]])
    rng = np.random.default_rng(0)
    reach = max_jitter_px(spacing) - 4 * spacing
    for _ in range(4):
        jitter = torch.from_numpy(rng.uniform(-reach, reach, (4, 2)).astype(np.float32))
        rot = rotations()
        crops = extract_crops(_card_image(quad), (torch.from_numpy(quad).float() + 0.5 - jitter)[None], rot, spacing)
        target = (rot.transpose(-1, -2) @ jitter[..., None])[..., 0] / spacing
        if augment:
            crops, target = photometric_and_mirror(crops, target, rng)
        for k in range(4):
            cx, cy = (target[k] + (CROP_PX - 1) / 2).tolist()       # the corner, in crop pixel indices

            def at(dx, dy, crop=crops[k], cx=cx, cy=cy):
                return float(crop[:, int(round(cy + dy)), int(round(cx + dx))].mean())
            assert at(3, 3) > at(-3, -3) + 0.3 and at(3, 3) > at(3, -3) + 0.3 and at(3, 3) > at(-3, 3) + 0.3, k


def test_refiner_crops_sample_exactly_where_the_geometry_says():
    """On an image whose pixels hold their own continuous coordinates (x + 0.5, y + 0.5), bilinear
    sampling is exact, so every crop pixel must read centre + s_k * R_k @ (column - 15.5, row - 15.5),
    s_k each crop's spacing (here coarse, fine, coarse, fine): a half-pixel slip, a wrong rotation or
    a spacing applied to the wrong crop shows here."""
    from corners.refine import CROP_PX, crop_offsets, extract_crops, rotations

    ys, xs = torch.meshgrid(torch.arange(640.0) + 0.5, torch.arange(480.0) + 0.5, indexing="ij")
    image = torch.stack([xs, ys, torch.zeros_like(xs)])[None]
    centres = torch.tensor([[[100.25, 120.5], [380.0, 150.75], [350.5, 520.0], [90.0, 480.25]]])
    spacing = torch.tensor([2.0, 1.0, 2.0, 1.0])
    rot = rotations()
    crops = extract_crops(image, centres, rot, spacing)                          # (4, 3, 32, 32)
    expected = centres[0, :, None, :] + spacing[:, None, None] * crop_offsets() @ rot.transpose(-1, -2)
    got = crops[:, :2].permute(0, 2, 3, 1).reshape(4, CROP_PX * CROP_PX, 2)      # (4, 32 * 32, 2)
    assert torch.allclose(got, expected, atol=1e-3)
    # Crop pixel (15.5, 15.5), between the middle four, is the centre itself.
    assert torch.allclose(got.view(4, CROP_PX, CROP_PX, 2)[:, 15:17, 15:17].mean((1, 2)), centres[0], atol=1e-3)


def test_looks_and_edge_points_scale_the_refiners_answer_by_their_spacing():
    """A refiner that always answers the same offset (1, 2) crop px: each corner moves by
    sum(LOOK_SPACING) * R_k @ (1, 2) image px, and each side's line runs EDGE_SPACING * 2 px inside
    the quad's side. A spacing dropped or applied twice anywhere shows here."""
    from corners.refine import EDGE_SPACING, LOOK_SPACING, CornerRefiner, locate_edges, refine_corners, rotations

    class Constant(CornerRefiner):
        def forward(self, crops):
            n = len(crops)
            return torch.tensor([[1.0, 2.0]]).expand(n, 2), torch.full((n,), 5.0)   # in sight

    refiner = Constant().eval()
    images = torch.zeros(1, 3, 640, 480)
    quad = torch.tensor([[[100.0, 120.0], [380.0, 150.0], [350.0, 520.0], [90.0, 480.0]]], dtype=torch.float64)
    moved, _ = refine_corners(refiner, images, quad)
    step = rotations(torch.float64) @ torch.tensor([1.0, 2.0], dtype=torch.float64)        # (4, 2)
    assert torch.allclose(moved, quad + sum(LOOK_SPACING) * step[None])
    point, direction, _ = locate_edges(refiner, images, quad)
    side = quad[:, [1, 2, 3, 0]] - quad
    u = side / torch.linalg.norm(side, dim=-1, keepdim=True)
    inward = torch.stack([-u[..., 1], u[..., 0]], -1)                                        # into the card
    inside = ((point - quad) * inward).sum(-1)                                               # (1, 4) px
    assert torch.allclose(inside, torch.full_like(inside, 2.0 * EDGE_SPACING))
    assert torch.allclose((direction * u).sum(-1).abs(), torch.ones(1, 4, dtype=torch.float64))


def _quad_dataset(root, quads):
    """A dataset of white quads (pixel-centre corners) on black, masks and corner annotations alike."""
    import json

    entries = {}
    for s in ("train", "test"):
        os.makedirs(os.path.join(root, s, "images"), exist_ok=True)
        os.makedirs(os.path.join(root, s, "masks"), exist_ok=True)
    for i, quad in enumerate(quads):
        img = (_card_image(quad)[0].permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        cv2.imwrite(os.path.join(root, "test", "images", f"q{i}.png"), img)
        cv2.imwrite(os.path.join(root, "test", "masks", f"q{i}.png"), (img[..., 0] > 127).astype(np.uint8) * 255)
        entries[f"q{i}.png"] = np.asarray(quad).tolist()
    with open(os.path.join(root, "corner_annotations.json"), "w") as f:
        json.dump({"train": {}, "test": entries}, f)
    return str(root)


def test_refiner_training_targets_point_at_the_corner_and_the_side(tmp_path):
    """RefinerCrops without augmentation on white quads on black, every crop at its own spacing:
    just around a corner crop's target only the bottom-right quadrant is card, and an edge crop's
    target row has card just below it and background just above. A target off by its spacing
    (the jitter not divided by it, or divided twice) misses on most crops."""
    from corners.refine import CROP_PX
    from train_corner_refiner import CORNER, ITEM_KIND, RefinerCrops

    rng = np.random.default_rng(0)
    base = np.array([[100.0, 120.0], [380.0, 150.0], [350.0, 520.0], [90.0, 480.0]])
    data = RefinerCrops(_quad_dataset(tmp_path, [base + rng.uniform(-20, 20, (4, 2)) for _ in range(8)]), "test",
                        6.0, augment=False, seed=0)
    hits = []
    for i in range(len(data)):
        crops, target, weight, visible, use = data[i]
        for j in range(len(crops)):
            cx, cy = (target[j] + (CROP_PX - 1) / 2).tolist()
            if not (3 <= cx < CROP_PX - 3 and 3 <= cy < CROP_PX - 3):
                continue
            grey = crops[j].mean(0)

            def at(dx, dy, grey=grey, cx=cx, cy=cy):
                return float(grey[int(round(cy + dy)), int(round(cx + dx))])
            if ITEM_KIND[j] == CORNER:
                hits.append(at(2, 2) > 0.7 and max(at(-2, -2), at(2, -2), at(-2, 2)) < 0.3)
            else:
                hits.append(at(0, 2) > 0.7 and at(0, -2) < 0.3)
    assert len(hits) > 80 and np.mean(hits) > 0.95, (len(hits), np.mean(hits))


def _detector_output(quad, n_anchors):
    """A detector output0 (1, 17, N) whose three best anchors put the card's corners at quad + 0..2 px."""
    output0 = torch.zeros(1, 17, n_anchors)
    output0[0, :4, :3] = torch.tensor([240.0, 320.0, 300.0, 400.0])[:, None]
    output0[0, 4, :3] = torch.tensor([0.9, 0.85, 0.3])
    for j in range(3):
        kp = torch.from_numpy(quad + 0.5 + j).float()
        output0[0, 5:, j] = torch.cat([kp, torch.ones(4, 1)], 1).reshape(-1)
    return output0


def _stage_session(refiner):
    import onnxruntime as ort

    from corners import export as corner_export

    return ort.InferenceSession(corner_export.refine_stage_onnx(refiner, 17).SerializeToString(),
                                providers=["CPUExecutionProvider"])


def test_refine_stage_onnx_matches_pytorch():
    """Decoding + refinement + fallback + quad checks exported to ONNX (what export_corners.py appends
    to the detector) give PyTorch's outputs, a corner outside the frame included."""
    from corners import export as corner_export
    from corners.refine import CornerRefiner, DecodeAndRefine

    torch.manual_seed(0)
    refiner = CornerRefiner().eval()
    quad = np.array([[100.0, 120.0], [380.0, 150.0], [350.0, 520.0], [-20.0, 480.0]])
    images = _card_image(quad)
    output0 = _detector_output(quad, corner_export.NUM_ANCHORS)
    with torch.no_grad():
        expected = DecodeAndRefine(refiner)(images, output0)
    got = _stage_session(refiner).run(corner_export.STAGE_OUTPUTS, {"images": images.numpy(),
                                                                     "output0": output0.numpy()})
    assert [o.shape for o in got] == [(1, 4, 2), (1,), (1, 4), (1, 4), (1, 12, 4, 2), (1, 12)]
    for name, a, b in zip(corner_export.STAGE_OUTPUTS, got, expected):
        assert np.abs(a - b.numpy()).max() < 1e-3, name
    assert (got[5][0, 1:] == 0).all(), "one card: the other slots are empty"


def test_refiner_graph_refines_any_number_of_quads_as_pytorch():
    """card_corners_refiner.onnx: one frame, N quads (N free), each refined as RefineQuads does in
    PyTorch, whether it holds one quad or several (several quads share the one image)."""
    import onnxruntime as ort

    from corners import export as corner_export
    from corners.refine import CornerRefiner, RefineQuads

    torch.manual_seed(0)
    refiner = CornerRefiner().eval()
    quad = np.array([[100.0, 120.0], [380.0, 150.0], [350.0, 520.0], [-20.0, 480.0]])
    images = _card_image(quad)
    sess = ort.InferenceSession(corner_export.refiner_onnx(refiner, 17).SerializeToString(),
                                providers=["CPUExecutionProvider"])
    for quads in (quad[None] + 0.5, np.stack([quad + 0.5, quad * 0.6 + 60, quad + 3.5])):
        q = torch.from_numpy(quads).float()
        with torch.no_grad():
            expected = RefineQuads(refiner)(images, q)
            alone = [RefineQuads(refiner)(images, q[i:i + 1])[0] for i in range(len(q))]
        got = sess.run(corner_export.REFINER_OUTPUTS, {"images": images.numpy(), "quads": quads.astype(np.float32)})
        assert [o.shape for o in got] == [(len(q), 4, 2), (len(q),), (len(q), 4), (len(q), 4)]
        for name, a, b in zip(corner_export.REFINER_OUTPUTS, got, expected):
            assert np.abs(a - b.numpy()).max() < 1e-3, name
        np.testing.assert_allclose(torch.cat(alone).numpy(), expected[0].numpy(), atol=1e-4)


def _hand_card(seed=0):
    """A 480x640 scene: a card (rounded corners, bright border, darker art and a text box) warped in
    perspective onto a cluttered background; its true quad (pixel-centre coordinates, clockwise
    from top-left)."""
    rng = np.random.default_rng(seed)
    img = cv2.resize(rng.uniform(40, 120, (16, 12, 3)).astype(np.uint8), (480, 640), interpolation=cv2.INTER_CUBIC)
    w, h, r = 252, 352, 12                       # 63 x 88 mm at 4 px/mm, 3 mm corner radius
    card = np.zeros((h, w, 3), np.uint8)
    alpha = np.zeros((h, w), np.uint8)
    for a in (card, alpha):
        colour = (235, 230, 220) if a is card else 255
        cv2.rectangle(a, (r, 0), (w - 1 - r, h - 1), colour, -1)
        cv2.rectangle(a, (0, r), (w - 1, h - 1 - r), colour, -1)
        for cx, cy in ((r, r), (w - 1 - r, r), (w - 1 - r, h - 1 - r), (r, h - 1 - r)):
            cv2.circle(a, (cx, cy), r, colour, -1, cv2.LINE_AA)
    cv2.rectangle(card, (20, 24), (w - 21, 200), (60, 90, 150), -1)
    cv2.rectangle(card, (20, 214), (w - 21, h - 30), (200, 190, 170), -1)
    quad = np.array([[110.0, 140.0], [362.0, 128.0], [380.0, 478.0], [95.0, 490.0]])
    src = np.array([[-0.5, -0.5], [w - 0.5, -0.5], [w - 0.5, h - 0.5], [-0.5, h - 0.5]], np.float32)
    m = cv2.getPerspectiveTransform(src, quad.astype(np.float32))
    warped = cv2.warpPerspective(card, m, (480, 640), flags=cv2.INTER_LINEAR)
    a = cv2.warpPerspective(alpha, m, (480, 640), flags=cv2.INTER_LINEAR)[..., None] / 255.0
    return (img * (1 - a) + warped * a).astype(np.uint8), quad


def _thumb(img, corner, towards, radius=26.0):
    """A skin-coloured capsule whose tip covers `corner`, coming in from `towards` (a unit vector
    pointing out of the card), with cylinder shading like a thumb."""
    h, w = img.shape[:2]
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    tip = corner - 8 * towards
    a, b = tip, tip + 200 * towards
    ab = b - a
    t = np.clip(((xs - a[0]) * ab[0] + (ys - a[1]) * ab[1]) / (ab @ ab), 0, 1)
    d = np.hypot(xs - (a[0] + t * ab[0]), ys - (a[1] + t * ab[1]))
    shade = np.sqrt(np.clip(1 - (d / radius) ** 2, 0, 1))
    alpha = np.clip(radius - d, 0, 1)[..., None]
    colour = np.array([224, 172, 135], np.float64) * (0.45 + 0.55 * shade)[..., None]
    return (img * (1 - alpha) + colour * alpha).astype(np.uint8)


def _finish(img, detector_quad):
    from corners.refine import DEFAULT_REFINER, finish_corners, load_refiner

    refiner = load_refiner(DEFAULT_REFINER)
    x = torch.from_numpy(img).permute(2, 0, 1)[None].float() / 255
    with torch.no_grad():
        corners, score, visible, fallback = finish_corners(
            refiner, x, torch.from_numpy(detector_quad + 0.5)[None], torch.tensor([0.9], dtype=torch.float64))
    return corners[0].numpy() - 0.5, float(score[0]), visible[0].numpy(), fallback[0].numpy()


def test_committed_refiner_puts_a_corner_under_a_thumb_where_its_edges_meet():
    """The committed refiner on a card held by a thumb over its top-left corner: that corner is judged
    hidden and placed where its two sides meet (within 3 px of the true corner, from detector corners
    6 px off), the fallback does not engage on the three corners in sight, and on the same card without
    the thumb it engages nowhere."""
    img, quad = _hand_card()
    rng = np.random.default_rng(1)
    detector = quad + rng.uniform(-6, 6, quad.shape)
    out = quad[0] - quad.mean(0)
    thumbed = _thumb(img, quad[0], out / np.linalg.norm(out))
    corners, score, visible, fallback = _finish(thumbed, detector)
    err = np.linalg.norm(corners - quad, axis=-1)
    assert score > 0.5 and visible[0] < 0.5 and fallback.tolist() == [1, 0, 0, 0], (visible, fallback)
    assert err[0] < 3.0 and err[1:].max() < 2.0, err
    corners, score, visible, fallback = _finish(img, detector)
    assert fallback.tolist() == [0, 0, 0, 0] and (visible > 0.5).all(), visible
    assert np.linalg.norm(corners - quad, axis=-1).max() < 2.0


def test_exported_stage_matches_pytorch_on_an_occluded_corner():
    """The committed refiner's ONNX stage on the thumb image: corners within 1 px of PyTorch, the
    same fallback decisions."""
    from corners import export as corner_export
    from corners.refine import DEFAULT_REFINER, DecodeAndRefine, load_refiner

    img, quad = _hand_card()
    out = quad[2] - quad.mean(0)
    thumbed = _thumb(img, quad[2], out / np.linalg.norm(out))
    images = torch.from_numpy(thumbed).permute(2, 0, 1)[None].float() / 255
    output0 = _detector_output(quad + 3.0, corner_export.NUM_ANCHORS)
    refiner = load_refiner(DEFAULT_REFINER)
    with torch.no_grad():
        ref = DecodeAndRefine(refiner)(images, output0)
    got = _stage_session(refiner).run(corner_export.STAGE_OUTPUTS, {"images": images.numpy(),
                                                                     "output0": output0.numpy()})
    assert ref[3][0, 2] > 0.5, "the fallback engages under the thumb"
    assert np.linalg.norm(got[0] - ref[0].numpy(), axis=-1).max() < 1.0
    assert np.abs(got[3] - ref[3].numpy()).max() < 1e-3 and abs(got[1][0] - float(ref[1][0])) < 1e-6


def test_quad_order_repair_and_plausibility():
    """Swapped corners come back in the annotations' order; a corner pushed inside the card (a reflex
    turn) is replaced by its sides' meeting point, or the parallelogram's corner without one; a
    sliver, a tiny quad and a self-overlapping one are not cards."""
    from corners.refine import canonical_index, quad_is_card, repair_quad, take

    quad = torch.tensor([[[100.0, 120.0], [380.0, 150.0], [350.0, 520.0], [90.0, 480.0]]], dtype=torch.float64)
    for perm in ([0, 2, 1, 3], [2, 3, 0, 1], [3, 2, 1, 0], [1, 0, 3, 2]):
        scrambled = quad[:, perm]
        assert torch.equal(take(scrambled, canonical_index(scrambled)), quad), perm
    assert quad_is_card(quad, 480, 640).item()
    dented = quad.clone()
    dented[0, 2] = torch.tensor([200.0, 250.0])                     # BR pulled inside the triangle
    assert not quad_is_card(dented, 480, 640).item()
    meet = torch.zeros_like(quad)
    meet[0, 2] = torch.tensor([351.0, 519.0])
    fixed, repaired = repair_quad(dented, meet, torch.tensor([[False, False, True, False]]))
    assert torch.allclose(fixed[0, 2], meet[0, 2]) and repaired.tolist() == [[False, False, True, False]]
    fixed, _ = repair_quad(dented, meet, torch.zeros(1, 4, dtype=torch.bool))     # no trusted meeting point
    assert torch.allclose(fixed[0, 2], quad[0, 1] + quad[0, 3] - quad[0, 0]) and quad_is_card(fixed, 480, 640).item()
    assert torch.equal(repair_quad(quad, meet, torch.ones(1, 4, dtype=torch.bool))[0], quad)   # a card stays
    sliver = torch.tensor([[[100.0, 100.0], [400.0, 100.0], [400.0, 140.0], [100.0, 140.0]]], dtype=torch.float64)
    tiny = torch.tensor([[[100.0, 100.0], [130.0, 100.0], [130.0, 140.0], [100.0, 140.0]]], dtype=torch.float64)
    assert not quad_is_card(sliver, 480, 640).item() and not quad_is_card(tiny, 480, 640).item()


def test_every_generated_card_is_a_plausible_quad(tmp_path):
    """The plausibility check never turns a real card into "no card": every quad of the hard preset
    (steep poses, cards partly out of the frame) passes it."""
    from conftest import make_dataset
    from corners.data import corner_samples
    from corners.refine import quad_is_card

    make_dataset(tmp_path, 0, 60, seed=5, workers=1, preset="hard", extra=["--multi-card", "0.3"])
    samples = corner_samples(str(tmp_path), "test")
    assert any(len(c) > 1 for _, c in samples), "the hard preset's multi-card scenes are in the test"
    quads = np.concatenate([c for _, c in samples]) + 0.5
    assert quad_is_card(torch.from_numpy(quads), 480, 640).all()


def test_visibility_labels_follow_the_mask_and_agree_with_the_generator(tmp_path):
    """The refiner's training labels come from the mask (a finger over a corner is not card), so they
    work on any dataset; on generated cards they agree with the generator's corner states."""
    from conftest import make_dataset
    from corners.data import corner_samples, corner_states
    from train_corner_refiner import RefinerCrops

    make_dataset(tmp_path, 0, 40, seed=7, workers=1, preset="hard", extra=["--multi-card", "0.5"])
    data = RefinerCrops(str(tmp_path), "test", 6.0, augment=False, seed=0)
    samples = corner_samples(str(tmp_path), "test")
    states = np.concatenate([s for s in corner_states(str(tmp_path), "test", samples) if len(s)])
    assert len(data) == len(states) > sum(len(c) > 0 for _, c in samples), "one item per card"
    labels = np.stack([data[i][3][:4].numpy() for i in range(len(data))])
    inside = states > 0
    assert (states == 1).sum() >= 10
    assert ((labels > 0.5) == (states == 2))[inside].mean() > 0.95


def test_refiner_training_writes_checkpoints_and_loads(refiner_ckpt, tmp_path, caplog):
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
    # A refiner trained on other crops (the 64 px full-resolution looks before) would point at the
    # wrong place: refused for inference, a start for a fine-tune.
    old = torch.load(refiner_ckpt["best"], weights_only=True)
    old.update(crop_px=64, look_spacing=None, edge_spacing=None)
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(DataError, match="old.pt: a refiner trained on other crops"):
        load_refiner(str(tmp_path / "old.pt"))
    with caplog.at_level("WARNING"):
        assert isinstance(load_refiner(str(tmp_path / "old.pt"), finetune=True), CornerRefiner)
    assert "old.pt was trained on other crops" in caplog.text
    # Nor can such a run be resumed: the message says which weights start a new one.
    from train_corner_refiner import load_run

    old_run = torch.load(refiner_ckpt["last"], weights_only=False)
    old_run.update(crop_px=64, look_spacing=None, edge_spacing=None)
    os.makedirs(tmp_path / "old_run")
    torch.save(old_run, tmp_path / "old_run" / "last.pt")
    with pytest.raises(DataError, match=r"last.pt: a run on other crops .* --weights .*old_run/best.pt"):
        load_run(str(tmp_path / "old_run" / "last.pt"))


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
        train_corner_refiner.RefinerCrops(str(tmp_path), "train", 6.0, augment=False, seed=0)
