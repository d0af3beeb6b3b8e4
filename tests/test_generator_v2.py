"""Generator v2 (synthetic/v2.py, synthetic/photos.py, generate_dataset.py --preset/--photos, preview_dataset.py)."""

import dataclasses
import hashlib
import json
import os

import cv2
import numpy as np
import pytest

import generate_dataset
import preview_dataset
from common import IMAGE_HEIGHT, IMAGE_WIDTH, DataError
from conftest import make_dataset
from synthetic import scenes
from synthetic import v2 as synthetic_v2
from synthetic.photos import PhotoPool
from synthetic.v1 import HIDDEN, OUTSIDE, VISIBLE

# Nothing but the feature under test: every other v2 option off.
BARE = synthetic_v2.Preset(negative=0, outside=0, thumb_corner=0, edge_fingers=0, border_hand=0, behind_fingers=0,
                           photo_background=0, photo_art=0, structured=0, touching_region=0, dark_border_dark_scene=0,
                           card_back=0, foil=0, background_blur=0, glare_band=0, low_light=0, over_exposure=0,
                           strong_cast=0)


def _render(preset, seed, photos=None):
    return synthetic_v2.render_scene_v2(np.random.default_rng(seed), preset, photos=photos)


def _write_photos(folder, colour, n=3, size=(300, 400)):
    """Solid-colour photos (BGR colour) with a little texture, so they are unmistakable in a scene."""
    os.makedirs(folder, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        img = np.empty(size + (3,), np.uint8)
        img[:] = colour
        img = np.clip(img.astype(int) + rng.integers(-10, 11, img.shape), 0, 255).astype(np.uint8)
        cv2.imwrite(os.path.join(folder, f"photo_{i}.jpg"), img)
    return str(folder)


def test_thumb_over_a_corner_keeps_the_true_corner_and_is_not_card():
    """The thumb is drawn after the pose, so the same stream without it gives the same card: its
    corners are the true ones; with the thumb one of them is hidden and the mask has a hole there."""
    thumb = dataclasses.replace(BARE, thumb_corner=1.0)
    checked = 0
    for seed in range(12):
        with_thumb, without = _render(thumb, seed), _render(BARE, seed)
        np.testing.assert_array_equal(with_thumb.corners, without.corners)
        assert without.states == [VISIBLE] * 4 or OUTSIDE in without.states
        hidden = [k for k, s in enumerate(with_thumb.states) if s == HIDDEN]
        if not hidden:      # the thumb may lie over a corner outside the frame
            continue
        k = hidden[0]
        corner, centre = with_thumb.corners[k], with_thumb.corners.mean(0)
        # A point past the rounded corner, into the card, under the thumb.
        card_w = np.linalg.norm(with_thumb.corners[1] - with_thumb.corners[0])
        inside = corner + (centre - corner) / np.linalg.norm(centre - corner) * 0.05 * card_w
        x, y = int(round(inside[0])), int(round(inside[1]))
        assert without.mask[y, x] == 255 and with_thumb.mask[y, x] == 0, seed
        assert (with_thumb.mask > 0).sum() < (without.mask > 0).sum()
        checked += 1
    assert checked >= 8


def test_out_of_frame_cards_keep_their_true_corners():
    outside = dataclasses.replace(BARE, outside=1.0)
    for seed in range(6):
        s = _render(outside, seed)
        out = [k for k, st in enumerate(s.states) if st == OUTSIDE]
        assert out, seed
        for k in out:   # the JSON keeps coordinates outside the image, not clipped ones
            x, y = s.corners[k]
            assert x < -0.5 or y < -0.5 or x >= IMAGE_WIDTH - 0.5 or y >= IMAGE_HEIGHT - 0.5
        border = np.concatenate([s.mask[0], s.mask[-1], s.mask[:, 0], s.mask[:, -1]])
        assert border.max() == 255, "a card leaving the frame touches its border"


def test_photos_appear_in_backgrounds_and_card_art(tmp_path):
    green = PhotoPool(_write_photos(tmp_path / "green", (0, 200, 0)))

    def green_share(scene, where):
        hsv = cv2.cvtColor(scene.image, cv2.COLOR_RGB2HSV)
        green_px = (abs(hsv[..., 0].astype(int) - 60) < 12) & (hsv[..., 1] > 120)
        return green_px[where].mean()

    photo_bg = dataclasses.replace(BARE, photo_background=1.0)
    photo_art = dataclasses.replace(BARE, photo_art=1.0)

    def mean_share(preset, photos, card):
        scenes = [_render(preset, seed, photos) for seed in range(8)]
        return np.mean([green_share(s, s.mask > 0 if card else s.mask == 0) for s in scenes])

    # Clutter, lighting and colour jitter cover or shift part of the photo; most of it stays.
    assert mean_share(photo_bg, green, card=False) > 0.5
    assert mean_share(photo_art, green, card=True) > 0.3
    # The same measures without the photos: they see the photos, not the renderer.
    assert mean_share(photo_bg, None, card=False) < 0.1
    assert mean_share(photo_art, None, card=True) < 0.15


def test_v1_preset_renders_the_first_generators_scenes():
    """--preset v1 is image for image the first generator: its random stream and corners are those
    the v1 figures were measured on (hash of 40 scenes' corners, seed 0, train split)."""
    out = []
    for i in range(40):
        frame = scenes.render_frame(0, "train", i, "v1")
        out.append(None if frame.negative else np.round(frame.corners[0], 4).tolist())
    digest = hashlib.sha256(json.dumps(out).encode()).hexdigest()
    assert digest == "f4ffad072dfb97af13a6bd6ca8f36ba9cfa7135209c5ab0f06146135b115ce4a"


def _tree_digest(root):
    h = hashlib.sha256()
    for dirpath, _, files in sorted(os.walk(root)):
        for f in sorted(files):
            h.update(f.encode())
            with open(os.path.join(dirpath, f), "rb") as fh:
                h.update(fh.read())
    return h.hexdigest()


def test_v2_with_photos_is_deterministic_whatever_the_workers_and_writes_corner_states(tmp_path):
    photos = _write_photos(tmp_path / "photos", (40, 90, 200))
    digests = []
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        make_dataset(out, 10, 3, seed=5, workers=workers, preset="hard", extra=["--photos", photos])
        digests.append(_tree_digest(out))
    assert digests[0] == digests[1]
    with open(tmp_path / "w1" / "corner_annotations.json") as f:
        ann = json.load(f)
    with open(tmp_path / "w1" / "corner_visibility.json") as f:
        vis = json.load(f)
    for split in ("train", "test"):
        assert set(vis[split]) == set(ann[split])          # one entry per annotated image
        assert all(len(v) == 4 and set(v) <= {OUTSIDE, HIDDEN, VISIBLE} for v in vis[split].values())
        # The users' format stays as it is: 4 points per image, nothing else.
        assert all(np.asarray(p).shape == (4, 2) for p in ann[split].values())


@pytest.mark.parametrize("case", ["missing", "empty", "corrupt", "zero_bytes"])
def test_bad_photos_folder_is_a_clear_error_naming_it(tmp_path, case):
    folder = tmp_path / "photos"
    if case != "missing":
        _write_photos(folder, (0, 0, 255), n=1)
    if case == "empty":
        os.remove(folder / "photo_0.jpg")
        (folder / "notes.txt").write_text("no image here")
    bad = folder / "broken.jpg"
    if case == "corrupt":
        bad.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    if case == "zero_bytes":
        bad.write_bytes(b"")
    with pytest.raises(DataError) as e:
        generate_dataset.main(generate_dataset.get_args_parser().parse_args(
            ["--output", str(tmp_path / "out"), "--num-train", "2", "--num-test", "1", "--quiet", "--preset", "v2",
             "--photos", str(folder)]))
    msg = str(e.value)
    assert "--photos" in msg
    assert str(bad if case in ("corrupt", "zero_bytes") else folder) in msg
    assert not (tmp_path / "out" / "corner_annotations.json").exists()


def test_presets_and_their_options_do_not_mix(tmp_path):
    def run(*extra):
        generate_dataset.main(generate_dataset.get_args_parser().parse_args(
            ["--output", str(tmp_path / "out"), "--num-train", "1", "--num-test", "1", "--quiet", *extra]))
    with pytest.raises(DataError, match="--photos needs"):
        run("--preset", "v1", "--photos", str(tmp_path))
    with pytest.raises(DataError, match="--backgrounds is the v1"):
        run("--preset", "v2", "--backgrounds", str(tmp_path))


def test_hard_preset_concentrates_the_failure_modes():
    """Over the same streams, the hard preset has more images with a hidden corner and with a
    corner outside the frame than v2."""
    def shares(preset):
        states = [_render(preset, [7, seed]).states for seed in range(30)]
        states = [s for s in states if s is not None]
        return np.mean([HIDDEN in s for s in states]), np.mean([OUTSIDE in s for s in states])
    (hidden_v2, outside_v2), (hidden_hard, outside_hard) = shares(synthetic_v2.V2), shares(synthetic_v2.HARD)
    assert hidden_hard > 1.4 * hidden_v2 and outside_hard > 2 * outside_v2


def test_preview_sheet(tmp_path):
    out = preview_dataset.main(preview_dataset.get_args_parser().parse_args(
        ["--preset", "hard", "--count", "5", "--columns", "3", "--scale", "0.25", "--annotate",
         "--output", str(tmp_path / "sheet.png")]))
    sheet = cv2.imread(out)
    assert sheet.shape == (2 * IMAGE_HEIGHT // 4, 3 * IMAGE_WIDTH // 4, 3)
    assert sheet[: IMAGE_HEIGHT // 4].std() > 10      # rendered scenes, not blank tiles


@pytest.mark.parametrize("preset", ["v1", "v2", "hard"])
def test_negative_fraction_sets_the_share_of_card_free_frames(preset):
    """--negative-fraction: 1 gives card-free frames only, 0 none; the preset's own share gives the
    preset's images exactly (the stream draws the same numbers), so default datasets do not change."""
    def frames(fraction):
        return [scenes.render_frame(4, "train", i, preset, negative_fraction=fraction) for i in range(12)]
    for frame in frames(1.0):
        assert frame.negative and frame.mask.max() == 0
    assert not any(frame.negative for frame in frames(0.0))
    default, own = frames(None), frames(scenes.default_negative_fraction(preset))
    for a, b in zip(default, own):
        assert a.negative == b.negative
        np.testing.assert_array_equal(a.image, b.image)


def test_v2_and_hard_presets_draw_the_scenes_they_drew_before_negative_fraction():
    """Single-card datasets did not change with --negative-fraction nor with several cards (--multi-card
    0): which scenes are card-free and the corners of the others, 40 scenes of each preset (seed 0,
    train split), as generated before either."""
    out = []
    for preset in ("v2", "hard"):
        for i in range(40):
            frame = scenes.render_frame(0, "train", i, preset, multi_fraction=0)
            out.append([preset, frame.negative, None if frame.negative else np.round(frame.corners[0], 4).tolist()])
    assert sum(o[1] for o in out) == 6
    digest = hashlib.sha256(json.dumps(out).encode()).hexdigest()
    assert digest == "b1e8f21c36ff2675867a201a984812c30214554baf48d078ba7ffbbd597319e6"


def test_negative_fraction_outside_zero_to_one_is_refused(tmp_path):
    with pytest.raises(DataError, match="--negative-fraction must be between 0 and 1"):
        generate_dataset.main(generate_dataset.get_args_parser().parse_args(
            ["--output", str(tmp_path / "out"), "--num-train", "1", "--num-test", "0", "--quiet",
             "--negative-fraction", "1.5"]))
