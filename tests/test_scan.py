"""scan.py: corners and flat cards from photos of any size and orientation, bad files skipped, the
models checked before any work, and no torch on its path. Runs the shipped ONNX models; the
tolerances are ones a decent model meets (2 px at 480x640 scale, as the issue states)."""

import io
import json
import logging
import os
import subprocess
import sys

import cv2
import numpy as np
import pytest

import common
import scan
from conftest import TRAIN_DIR, make_dataset
from scanning import geometry

SCAN_PY = os.path.join(TRAIN_DIR, "scan.py")
# The test image: generator v1, seed 5, the first test image (all 4 corners visible, >= 30 px
# inside the frame); image 6 of that split has no card.
CARD, NEGATIVE = "card_test_000000.jpg", "negative_test_000006.jpg"
BIG = (1280, 1706)            # the photo the issue asks for: 480x640 scaled up, 3:4 within a pixel
TOLERANCE_480 = 2.0           # corner error allowed, px at 480x640 scale


@pytest.fixture(scope="module")
def v1_split(tmp_path_factory):
    """(images folder, {name: true corners (4, 2) in 480x640 pixel-index coordinates})."""
    root = tmp_path_factory.mktemp("scan_v1")
    make_dataset(root, 0, 8, seed=5, workers=1, preset="v1")
    with open(os.path.join(root, "corner_annotations.json")) as f:
        corners = {k: np.array(v) for k, v in json.load(f)["test"].items()}
    with open(os.path.join(root, "corner_visibility.json")) as f:
        assert json.load(f)["test"][CARD] == [2, 2, 2, 2]
    assert NEGATIVE not in corners and corners[CARD].min() > 30 and (corners[CARD] < (450, 610)).all()
    return os.path.join(root, "test", "images"), corners


def run(argv: list[str]) -> tuple[dict, list[dict]]:
    """scan.py's main on argv; its result and the records of scans.jsonl."""
    result = scan.main(scan.get_args_parser().parse_args(argv + ["--quiet", "--threads", "2"]))
    with open(result["jsonl"]) as f:
        return result, [json.loads(line) for line in f]


def run_cli(argv: list[str], monkeypatch) -> SystemExit | None:
    """As `python train/scan.py argv` runs: run_script's SystemExit on an error, None on success."""
    monkeypatch.setattr(sys, "argv", ["scan.py", *argv, "--quiet", "--threads", "2"])
    try:
        common.run_script(scan.main, scan.get_args_parser)
    except SystemExit as e:
        return e
    return None


def write_jpeg(path, bgr: np.ndarray, orientation: int | None = None) -> str:
    """JPEG q95, with an EXIF orientation tag when given (Pillow: OpenCV cannot write EXIF)."""
    from PIL import Image

    img = Image.fromarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    exif = img.getexif()
    if orientation is not None:
        exif[0x0112] = orientation
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, exif=exif)
    with open(path, "wb") as f:
        f.write(buf.getvalue())
    return str(path)


def blurred_grey(bgr: np.ndarray) -> np.ndarray:
    return cv2.GaussianBlur(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.float64), (0, 0), 3)


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.corrcoef(blurred_grey(a).ravel(), blurred_grey(b).ravel())[0, 1])


# ----------------------------------------------------------------------------- geometry

@pytest.mark.parametrize("width, height, expected", [
    (1280, 720, (370, 0, 540, 720)), (640, 480, (140, 0, 360, 480)), (480, 640, (0, 0, 480, 640)),
    (720, 1280, (0, 160, 720, 960)), (1280, 1706, (0, 0, 1280, 1706)), (3, 3, (0, 0, 2, 3))])
def test_centred_crop_is_the_web_apps(width, height, expected):
    """Values of demo/js/image-utils.js centeredCrop34 (Math.round rounds 1279.5 up to 1280)."""
    assert geometry.centred_crop(width, height) == expected


@pytest.mark.parametrize("letterbox", [False, True], ids=["crop", "letterbox"])
@pytest.mark.parametrize("width, height", [(1001, 777), (333, 1000), (2000, 2667)])
def test_model_input_maps_back_to_the_original_pixel(width, height, letterbox):
    """A blob at a known pixel of the original, found in the model input, maps back onto that pixel
    (pixel-index coordinates, per-axis scale, crop offset or letterbox bars)."""
    target = np.array([0.55 * width + 0.3, 0.4 * height - 0.2])
    yy, xx = np.mgrid[:height, :width]
    sigma = 0.02 * max(width, height)
    blob = np.exp(-((xx - target[0]) ** 2 + (yy - target[1]) ** 2) / (2 * sigma ** 2))
    image = np.repeat((255 * blob).astype(np.uint8)[..., None], 3, axis=2)
    model_input, view = geometry.to_model_input(image, letterbox)
    assert model_input.shape == (640, 480, 3)
    w = model_input[..., 0].astype(np.float64)
    centroid = np.array([(w * np.arange(480)).sum(), (w * np.arange(640)[:, None]).sum()]) / w.sum()
    found = view.to_original(centroid[None] + 0.5)[0]          # pixel-index -> continuous -> original
    error = (found - target) * (view.scale_x, view.scale_y)        # in model-input pixels
    assert np.abs(error).max() < 0.05, (found, target)


def test_rectify_puts_the_corners_on_the_output_corners_and_keeps_portrait():
    """A card (white, a black band across its top) warped into a scene comes back as it was; lying
    sideways, it comes back portrait, the photo's bottom-left corner its top left (as in the app)."""
    card = np.full((880, 630, 3), 255, np.uint8)
    card[100:200] = 0
    quad = np.array([[300.0, 100.0], [820.0, 160.0], [760.0, 820.0], [250.0, 760.0]])   # TL, TR, BR, BL
    m = cv2.getPerspectiveTransform(np.float32([[-0.5, -0.5], [629.5, -0.5], [629.5, 879.5], [-0.5, 879.5]]),
                                    quad.astype(np.float32))
    scene = cv2.warpPerspective(card, m, (1200, 900))
    flat = geometry.rectify(scene, quad)
    assert flat.shape == (880, 630, 3) and correlation(flat, card) > 0.98
    small = geometry.rectify(scene, quad, (63, 88))         # 8x smaller than the card: area-averaged first
    assert small.shape == (88, 63, 3)
    assert correlation(small, cv2.resize(card, (63, 88), interpolation=cv2.INTER_AREA)) > 0.98
    sideways = np.ascontiguousarray(np.rot90(scene))      # a quarter turn anticlockwise: (x, y) -> (y, 1199 - x)
    turned = np.stack([quad[:, 1], 1199 - quad[:, 0]], axis=1)[[1, 2, 3, 0]]     # TL, TR, BR, BL there
    flat = geometry.rectify(sideways, turned)
    assert flat.shape == (880, 630, 3) and correlation(flat, card) > 0.98


# ----------------------------------------------------------------------------- the tests

@pytest.mark.parametrize("orientation", [None, 6], ids=["portrait", "exif_landscape"])
def test_a_big_photo_gives_corners_in_original_pixels_and_the_flat_card(v1_split, orientation, tmp_path):
    images, truth = v1_split
    upright = cv2.resize(cv2.imread(os.path.join(images, CARD)), BIG, interpolation=cv2.INTER_CUBIC)
    scale = np.array(BIG) / (480, 640)                                   # per axis: 2.667, 2.666
    expected = (truth[CARD] + 0.5) * scale - 0.5
    # Detail only the full-resolution photo has: black lines 3 px apart across the card's middle.
    cx, cy = np.round(expected.mean(0)).astype(int)
    upright[cy - 30:cy + 30:3, cx - 30:cx + 30] = 0
    photos = tmp_path / "photos"
    photos.mkdir()
    if orientation is None:
        write_jpeg(photos / "card.jpg", upright)
    else:   # stored landscape; EXIF 6 says "turn 90 degrees clockwise to view"
        write_jpeg(photos / "card.jpg", cv2.rotate(upright, cv2.ROTATE_90_COUNTERCLOCKWISE), orientation)
        from PIL import Image
        with Image.open(photos / "card.jpg") as stored:
            assert stored.size == (BIG[1], BIG[0]) and stored.getexif()[0x0112] == 6
    write_jpeg(photos / "empty_table.jpg", cv2.resize(cv2.imread(os.path.join(images, NEGATIVE)), BIG))
    out = tmp_path / "out"

    _, records = run([str(photos), "--output", str(out), "--masks"])

    card, empty = records
    assert card["source"] == os.path.join(str(photos), "card.jpg") and card["status"] == "ok"
    assert card["size"] == list(BIG)
    error = np.linalg.norm(np.array(card["corners"]) - expected, axis=1)
    assert error.max() <= TOLERANCE_480 * BIG[0] / 480, error
    # The flat card: from the full-resolution original, like the card rectified from the true corners.
    flat = cv2.imread(str(out / card["scan"]))
    assert flat.shape == (880, 630, 3)
    m = cv2.getPerspectiveTransform(expected.astype(np.float32),
                                    np.float32([[-0.5, -0.5], [629.5, -0.5], [629.5, 879.5], [-0.5, 879.5]]))
    reference = cv2.warpPerspective(upright, m, (630, 880))
    assert correlation(flat, reference) > 0.9
    (px, py), = cv2.perspectiveTransform(np.float32([[[cx, cy]]]), m)[0].round().astype(int)
    lines = [cv2.cvtColor(a, cv2.COLOR_BGR2GRAY)[py - 15:py + 15, px - 15:px + 15].std() for a in (flat, reference)]
    assert lines[0] > 0.7 * lines[1] > 20, f"fine detail lost: std {lines[0]:.1f}, expected {lines[1]:.1f}"
    # The mask, in the upright original's pixels, covers the card.
    mask = cv2.imread(str(out / card["mask"]), cv2.IMREAD_UNCHANGED) > 0
    quad = np.zeros(BIG[::-1], np.uint8)
    cv2.fillPoly(quad, [np.round(expected).astype(np.int32)], 1)
    assert mask.shape == BIG[::-1] and (mask & (quad > 0)).sum() / (mask | (quad > 0)).sum() > 0.9
    assert 0.1 < card["card_area"] < 0.3
    # No card: no corners, no flat image.
    assert empty["status"] == "no_card" and empty["score"] < common.NO_CARD_SCORE
    assert empty["corners"] is None and empty["scan"] is None and empty["card"] is None
    assert empty["cards"] == 0 and empty["mask_agrees"] is None and set(empty) == set(card)
    assert card["card"] == 1 and card["cards"] == 1 and card["mask_agrees"]
    assert os.listdir(out / "scans") == ["card_card1.jpg"]


def test_tiles_and_letterbox_find_a_card_the_centred_crop_cuts(v1_split, tmp_path):
    """A landscape photo with the card at its right edge: the app's crop (--central) loses part of the
    card, the tiles (the default) and --letterbox see it whole. The tolerance is 3 px of the model
    input (5 px of this photo at 0.6 scale, for the letterbox): one image, shrunk, is judged against
    the model card's figure for the clean split (98.9 % of corners within 5 px), not the 2 px of the
    full-size tests."""
    images, truth = v1_split
    name = "card_test_000001.jpg"                          # the card fills most of the frame
    image = cv2.imread(os.path.join(images, name))
    photo = np.empty((640, 800, 3), np.uint8)
    photo[:] = image[:, :8].reshape(-1, 3).mean(0)
    photo[:, 320:] = image
    path = write_jpeg(tmp_path / "wide.jpg", photo)
    expected = truth[name] + (320, 0)
    errors = {}
    for mode, option in (("central", ["--central"]), ("tiles", []), ("letterbox", ["--letterbox"])):
        _, (record,) = run([path, "--output", str(tmp_path / mode)] + option)
        errors[mode] = np.linalg.norm(np.array(record["corners"]) - expected, axis=1).max()
    assert errors["tiles"] <= 3.0 and errors["letterbox"] <= 3.0 / 0.6
    assert errors["central"] > 20


def _photo_of_cards(quads, size, seed=3):
    """A photo (size = (W, H)) of generated cards at quads (each (4, 2) TL, TR, BR, BL, pixel-index),
    on a card-free scene; BGR."""
    from synthetic import v1

    rng = np.random.default_rng(seed)
    photo = cv2.resize(v1.render_scene(rng, negative=True).image, size, interpolation=cv2.INTER_CUBIC).astype(float)
    cw, ch = v1.CARD_W, v1.CARD_H
    src = np.float32([[-0.5, -0.5], [cw - 0.5, -0.5], [cw - 0.5, ch - 0.5], [-0.5, ch - 0.5]])
    for q in quads:
        m = cv2.getPerspectiveTransform(src, np.float32(q))
        card = cv2.warpPerspective(v1.render_card(rng), m, size, flags=cv2.INTER_LINEAR).astype(float)
        alpha = cv2.warpPerspective(v1.rounded_rect_alpha(cw, ch, v1.CARD_RADIUS), m, size)[..., None]
        photo = card * alpha + photo * (1 - alpha)
    return cv2.cvtColor(np.clip(photo, 0, 255).astype(np.uint8), cv2.COLOR_RGB2BGR)


def _scans_match(records, out, photo, quads):
    """Each true card has exactly one record `ok` whose flat scan is that card (correlation >= 0.9
    with the card rectified from its true corners), and no record is anything else."""
    assert [r["status"] for r in records] == ["ok"] * len(quads), [(r["status"], r["score"]) for r in records]
    dst = np.float32([[-0.5, -0.5], [629.5, -0.5], [629.5, 879.5], [-0.5, 879.5]])
    truths = [cv2.warpPerspective(photo, cv2.getPerspectiveTransform(np.float32(q), dst), (630, 880)) for q in quads]
    matched = []
    for r in records:
        scan = cv2.imread(str(out / r["scan"]))
        best = max(range(len(quads)), key=lambda k: correlation(scan, truths[k]))
        assert correlation(scan, truths[best]) >= 0.9, r
        matched.append(best)
    assert sorted(matched) == list(range(len(quads))), "one scan per card"


@pytest.mark.xfail(strict=True, reason="issue #35: the shipped detector, trained on one card per frame, "
                                      "finds one quad across a grid; strict, so a model that passes ends the mark")
def test_nine_cards_in_a_grid_give_nine_scans_in_reading_order(tmp_path):
    """A landscape photo of nine cards in three rows, 10 px apart: nine `ok` records, scans named
    <name>_card1..9 in rows top to bottom, each row left to right."""
    w, h, gap = 110, 154, 10
    quads = [np.array([[x, y], [x + w, y], [x + w, y + h], [x, y + h]], float) - 0.5
             for y in (40 + r * (h + gap) for r in range(3)) for x in (220 + c * (w + gap) for c in range(3))]
    photo = _photo_of_cards(quads, (800, 600))
    path = write_jpeg(tmp_path / "grid.jpg", photo)
    _, records = run([path, "--output", str(tmp_path / "out")])
    _scans_match(records, tmp_path / "out", photo, quads)
    assert [r["scan"] for r in records] == [f"scans/grid_card{k}.jpg" for k in range(1, 10)]
    centres = np.array([np.mean(r["corners"], 0) for r in records])
    rows = np.round((centres[:, 1] - 40) / (h + gap)).astype(int)
    assert rows.tolist() == sorted(rows.tolist()) and all(
        np.all(np.diff(centres[rows == r, 0]) > 0) for r in range(3)), "reading order"


def test_two_touching_cards_give_two_scans(tmp_path):
    w, h = 180, 252
    left = np.array([[200, 150], [200 + w, 150], [200 + w, 150 + h], [200, 150 + h]], float) - 0.5
    quads = [left, left + [w, 0]]
    photo = _photo_of_cards(quads, (800, 600), seed=4)
    path = write_jpeg(tmp_path / "pair.jpg", photo)
    _, records = run([path, "--output", str(tmp_path / "out")])
    _scans_match(records, tmp_path / "out", photo, quads)


def test_views_merge_each_card_once_whole_and_in_reading_order():
    """The same card seen in two tiles is kept once (from the tile that shows it whole); a guess at a card
    cut by a tile's edge gives way to the card seen whole; a quad holding two cards kept from the closer
    views (a coarse view's union) is dropped; the cards come in rows, each left to right."""
    from scanning.agreement import Agreement
    from scanning.geometry import Geometry
    from scanning.pipeline import Card, ViewResult, merge_views

    def card(quad, score=0.9, ok=True):
        return Card(np.asarray(quad, float), score, Agreement(1.0, 1.0, np.ones(4), 0, ok))

    def box(x0, y0, x1, y1):
        return [[x0, y0], [x1, y0], [x1, y1], [x0, y1]]

    prob = np.zeros((640, 480), np.float32)
    left, right = Geometry(1, 1, 0, 0), Geometry(1, 1, -320, 0)          # two tiles of an 800 x 640 photo
    whole = Geometry(0.6, 0.6, 0, 128)                                   # the whole photo, letterboxed
    a, b, c = box(40, 60, 180, 256), box(360, 60, 500, 256), box(40, 300, 180, 496)
    results = [
        (ViewResult(prob, [card(a), card(c, 0.8), card(box(360, 60, 479, 256), 0.6, False)], 0), left),
        (ViewResult(prob, [card(np.array(b) - [320, 0], 0.95)], 0), right),
        (ViewResult(prob, [card((np.array(box(40, 60, 500, 256)) + 0.5) * 0.6 - 0.5 + [0, 128], 0.7)], 0), whole),
    ]
    cards = merge_views(results, 800, 640)
    assert len(cards) == 3
    # A quad the mask rejects across two confirmed neighbours (1.2 cards wide, so barely larger than
    # either) is a span of them, dropped; the same quad confirmed by the mask stays (overlapping cards).
    span = box(100, 60, 270, 256)
    pair = [card(box(40, 60, 180, 256)), card(box(181, 60, 321, 256))]
    assert len(merge_views([(ViewResult(prob, pair + [card(span, 0.7, False)], 0), left)], 800, 640)) == 2
    assert len(merge_views([(ViewResult(prob, pair + [card(span, 0.7)], 0), left)], 800, 640)) == 3
    np.testing.assert_allclose(cards[0].corners, np.array(a) - 0.5)        # row 1: a, then b
    np.testing.assert_allclose(cards[1].corners, np.array(b) - 0.5)
    np.testing.assert_allclose(cards[2].corners, np.array(c) - 0.5)        # row 2: c
    assert [k.view for k in cards] == [0, 1, 0] and all(k.whole for k in cards)


def test_bad_files_are_reported_and_skipped(v1_split, tmp_path, monkeypatch, caplog):
    images, _ = v1_split
    folder = tmp_path / "photos"
    folder.mkdir()
    good = open(os.path.join(images, CARD), "rb").read()
    (folder / "a_card.jpg").write_bytes(good)
    (folder / "b_truncated.jpg").write_bytes(good[:len(good) // 2])
    (folder / "c_empty.jpg").write_bytes(b"")
    (folder / "d_card.png").write_bytes(cv2.imencode(".png", cv2.imread(os.path.join(images, CARD)))[1].tobytes())

    with caplog.at_level(logging.INFO, logger="scan"):
        assert run_cli([str(folder), "--output", str(tmp_path / "out")], monkeypatch) is None   # exit code 0
    records = [json.loads(line) for line in open(tmp_path / "out" / "scans.jsonl")]
    assert [r["status"] for r in records] == ["ok", "unreadable", "unreadable", "ok"]
    assert [r["error"] for r in records[1:3]] == ["not a readable image (corrupt or an unsupported format)",
                                                  "empty file"]
    assert all(r["scan"] is None and r["score"] is None and r["card"] is None for r in records[1:3])
    assert all(set(r) == set(records[0]) | {"error"} for r in records[1:3])   # every record has every field
    assert sorted(os.listdir(tmp_path / "out" / "scans")) == ["a_card_card1.jpg", "d_card_card1.jpg"]
    messages = [r.getMessage() for r in caplog.records]
    assert f"{folder / 'c_empty.jpg'}: empty file (skipped)" in messages
    assert messages[-1].startswith("4 inputs in ") and messages[-1].endswith(
        f"2 ok, 0 low_score, 0 no_card, 2 unreadable -> {tmp_path / 'out' / 'scans.jsonl'}")

    exit_ = run_cli([str(folder), "--output", str(tmp_path / "strict"), "--strict"], monkeypatch)
    assert exit_.code == f"error: 2 of 4 inputs unreadable (--strict); see {tmp_path / 'strict' / 'scans.jsonl'}"
    assert len(open(tmp_path / "strict" / "scans.jsonl").readlines()) == 4     # the batch still ran


def test_runs_without_torch_from_any_directory(v1_split, tmp_path):
    """The command itself, in a fresh interpreter where importing torch (or the training stack)
    fails: train/requirements-scan.txt is all it needs."""
    images, _ = v1_split
    blocked = ["torch", "torchvision", "albumentations", "ultralytics", "onnx"]
    # sys.path[0] = train/, as `python train/scan.py` sets it.
    code = (f"import runpy, sys\nsys.path.insert(0, {TRAIN_DIR!r})\nfor m in {blocked!r}: sys.modules[m] = None\n"
            f"sys.argv = ['scan.py', {images!r}, '-o', 'out', '--quiet', '--threads', '2']\n"
            f"runpy.run_path({SCAN_PY!r}, run_name='__main__')\n"
            f"print(sorted(m for m in sys.modules if m.split('.')[0] in {blocked!r} and sys.modules[m]))")
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    assert len(open(tmp_path / "out" / "scans.jsonl").readlines()) == 8
    assert proc.stderr.strip().splitlines()[-1].split(": ", 1)[1].startswith("8 inputs in ")


def test_requirements_file_is_the_runtime_alone():
    pins = {}
    for path in ("requirements.txt", os.path.join("train", "requirements-scan.txt")):
        with open(os.path.join(common.REPO_ROOT, path)) as f:
            pins[path] = dict(line.split("==") for line in f.read().split("\n") if line and not line.startswith("#"))
    scan_pins = pins[os.path.join("train", "requirements-scan.txt")]
    assert set(scan_pins) == {"onnxruntime", "numpy", "opencv-python-headless", "tqdm"}
    assert all(pins["requirements.txt"][k] == v for k, v in scan_pins.items()), "same pins as requirements.txt"


# ----------------------------------------------------------------------------- checks before work

def _tiny_model(path, height=320, width=240) -> str:
    import onnx
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Identity", ["image"], ["mask"])], "tiny",
                              [helper.make_tensor_value_info("image", TensorProto.FLOAT, [1, 3, height, width])],
                              [helper.make_tensor_value_info("mask", TensorProto.FLOAT, [1, 3, height, width])])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    return str(path)


@pytest.mark.parametrize("option, model, message", [
    ("--seg-model", "missing", "model file not found"),
    ("--corner-model", "missing", "model file not found"),
    ("--seg-model", "text", "not a readable ONNX model ("),
    ("--seg-model", "small_input", "expected one float32 input [1, 3, 640, 480] (RGB 0..1), found image "
                                   "tensor(float) [1, 3, 320, 240]"),
    ("--seg-model", "corners", "expected a float32 output [1, 1, 640, 480]"),
    ("--corner-model", "segmentation", "expected outputs `corners` [1, 4, 2] and `score` [1]"),
])
def test_a_bad_model_is_one_error_before_any_work(v1_split, option, model, message, tmp_path, monkeypatch, capsys):
    images, _ = v1_split
    path = {"missing": str(tmp_path / "nope.onnx"), "small_input": _tiny_model(tmp_path / "small.onnx"),
            "corners": scan.DEFAULT_CORNER_MODEL, "segmentation": scan.DEFAULT_SEG_MODEL}.get(model)
    if model == "text":
        path = str(tmp_path / "notes.onnx")
        open(path, "w").write("not a model\n")
    exit_ = run_cli([images, "--output", str(tmp_path / "out"), option, path], monkeypatch)
    assert exit_.code.startswith(f"error: {option} {path}: {message}") and "\n" not in exit_.code, exit_.code
    assert capsys.readouterr().err == ""
    assert not os.path.exists(tmp_path / "out")


def test_output_folder_needs_overwrite_and_names_are_unique(v1_split, tmp_path, monkeypatch):
    """Same-named files in different folders get different scans; a non-empty output folder is
    refused, and --overwrite replaces the earlier scan's outputs, nothing else."""
    images, _ = v1_split
    card = open(os.path.join(images, CARD), "rb").read()
    for rel in ("a/x.jpg", "b/x.jpg", "b/X.JPG", "x.jpg"):
        os.makedirs(tmp_path / "in" / os.path.dirname(rel), exist_ok=True)
        (tmp_path / "in" / rel).write_bytes(card)
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")

    exit_ = run_cli([str(tmp_path / "in"), "--output", str(out)], monkeypatch)
    assert exit_.code == f"error: --output {out}: folder is not empty; use --overwrite to replace its scans"
    exit_ = run_cli([str(tmp_path / "missing"), "--output", str(tmp_path / "o2")], monkeypatch)
    assert exit_.code == f"error: {tmp_path / 'missing'}: no such file or folder"
    os.makedirs(tmp_path / "no_images" / "sub")
    exit_ = run_cli([str(tmp_path / "no_images"), "--output", str(tmp_path / "o2")], monkeypatch)
    assert exit_.code == (f"error: {tmp_path / 'no_images'}: no images (.jpg, .jpeg, .png, .bmp, .webp) in this "
                          "folder (--recursive searches its subfolders)")
    assert not os.path.exists(tmp_path / "o2")

    _, records = run([str(tmp_path / "in"), str(tmp_path / "in" / "a" / "x.jpg"), "-r", "-o", str(out), "--overwrite",
                      "--central"])
    scans = [r["scan"] for r in records]
    assert [r["source"] for r in records] == [os.path.join(str(tmp_path / "in"), p) for p in
                                              ("a/x.jpg", "b/X.JPG", "b/x.jpg", "x.jpg")] + [
        str(tmp_path / "in" / "a" / "x.jpg")]
    assert scans == ["scans/a/x.jpg", "scans/b/X.jpg", "scans/b/x_2.jpg", "scans/x.jpg", "scans/x_2.jpg"]
    assert all(os.path.isfile(out / s) for s in scans)
    _, records = run([str(tmp_path / "in"), "-o", str(out), "--overwrite"])           # not recursive now
    assert [r["scan"] for r in records] == ["scans/x_card1.jpg"]
    assert sorted(os.listdir(out)) == ["notes.txt", "scans", "scans.jsonl"]
    assert os.listdir(out / "scans") == ["x_card1.jpg"]


def test_a_video_gives_every_nth_frame(v1_split, tmp_path):
    images, truth = v1_split
    frame = cv2.imread(os.path.join(images, CARD))
    path = str(tmp_path / "clip.avi")
    writer = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (480, 640))
    for _ in range(7):
        writer.write(frame)
    writer.release()
    _, records = run([path, "--frame-step", "3", "--output", str(tmp_path / "out"), "--overlays"])
    assert [(r["source"], r["frame"], r["status"]) for r in records] == [(path, i, "ok") for i in (0, 3, 6)]
    assert [r["scan"] for r in records] == [f"scans/clip_frame{i:06d}_card1.jpg" for i in (0, 3, 6)]
    for r in records:
        assert np.linalg.norm(np.array(r["corners"]) - truth[CARD], axis=1).max() <= TOLERANCE_480
        assert cv2.imread(str(tmp_path / "out" / r["overlay"])).shape == (640, 480, 3)


def test_one_home_for_the_thresholds_and_output_names():
    """scan.py cannot import the torch-side modules; their constants must agree with it."""
    from corners import metrics, predict
    from segmentation import evaluation

    assert common.NO_CARD_SCORE == metrics.DEFAULT_CONF and common.MASK_THRESHOLD == evaluation.THRESHOLD
    from scanning import pipeline

    assert (pipeline.CORNERS_OUTPUT, pipeline.SCORE_OUTPUT) == (predict.REFINED_OUTPUT, predict.SCORE_OUTPUT)
    assert (pipeline.CARDS_OUTPUT, pipeline.CARD_SCORES_OUTPUT) == (predict.CARDS_OUTPUT, predict.CARD_SCORES_OUTPUT)
    assert (pipeline.QUADS_INPUT, pipeline.VALID_OUTPUT) == (predict.QUADS_INPUT, predict.VALID_OUTPUT)
    assert common.CENTRAL_MIN_SHARE == metrics.CENTRAL_MIN_SHARE
