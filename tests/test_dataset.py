import os
import shutil

import albumentations as A
import cv2
import numpy as np
import pytest

from common import DataError
from segmentation.dataset import (
    CardSegmentationDataset,
    find_samples,
    get_training_transforms,
    get_validation_transforms,
    load_sample,
)


def _card_scene():
    """A red card (its mask) left of centre on a blue table, 480x640: every change shows."""
    image = np.empty((640, 480, 3), np.uint8)
    image[:] = (40, 40, 160)
    mask = np.zeros((640, 480), np.uint8)
    mask[100:400, 40:200] = 1
    image[mask == 1] = (200, 60, 60)
    return image, mask


def test_training_pipeline_zooms_flips_tilts_recolours_and_occludes_the_card():
    """What the training transforms are for, measured on 60 draws of one frame: the card is zoomed
    in and out, mirrored about half the time, tilted; its colour changes; occluders and dead pixels
    cover parts of it while the mask keeps the whole card (the card is still there under them)."""
    image, mask = _card_scene()
    src_area = mask.mean()
    pipe = get_training_transforms(320, 240)
    pipe.set_random_seed(0)
    areas, mirrored, tilted, recoloured, occluded = [], 0, 0, 0, 0
    for _ in range(60):
        out = pipe(image=image, mask=mask)
        img, m = out["image"], out["mask"]
        assert img.shape == (320, 240, 3) and m.shape == (320, 240) and set(np.unique(m)) <= {0, 1}
        areas.append(m.mean())
        if m.sum() < 100:
            continue
        mirrored += np.nonzero(m)[1].mean() > 120
        contours, _ = cv2.findContours(m, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        whole = np.zeros_like(m)
        cv2.drawContours(whole, contours, -1, 1, -1)
        assert np.array_equal(whole, m), "the mask has a hole: an occluder was cut out of the card"
        angle = cv2.minAreaRect(max(contours, key=cv2.contourArea))[2] % 90
        tilted += min(angle, 90 - angle) > 3
        inside = img[cv2.erode(m, np.ones((11, 11), np.uint8)).astype(bool)].astype(np.float32)
        if len(inside) < 100:
            continue
        colour = np.median(inside, 0)
        recoloured += np.abs(colour - (200, 60, 60)).max() > 10
        occluded += (np.linalg.norm(inside - colour, axis=1) > 90).mean() > 0.003
    assert min(areas) < 0.7 * src_area and max(areas) > 1.5 * src_area, (min(areas), max(areas), src_area)
    assert 15 <= mirrored <= 45, mirrored
    assert tilted >= 10 and recoloured >= 20 and occluded >= 3, (tilted, recoloured, occluded)


def test_validation_pipeline_only_resizes():
    image, mask = _card_scene()
    out = get_validation_transforms(320, 240)(image=image, mask=mask)
    np.testing.assert_array_equal(out["image"], cv2.resize(image, (240, 320), interpolation=cv2.INTER_AREA))
    np.testing.assert_array_equal(out["mask"], cv2.resize(mask, (240, 320), interpolation=cv2.INTER_NEAREST))


def test_spatial_transforms_keep_image_and_mask_aligned(tiny_dataset):
    # The mask painted into the image must land where the transformed mask lands.
    spatial = [t for t in get_training_transforms().transforms if isinstance(t, A.DualTransform)]
    assert len(spatial) >= 4
    pipe = A.Compose(spatial, seed=1)
    _, mask = load_sample(*find_samples(tiny_dataset, "train")[0])
    for _ in range(20):
        out = pipe(image=np.repeat(mask[..., None] * 255, 3, axis=2), mask=mask)
        painted, m = out["image"][..., 0] >= 128, out["mask"].astype(bool)
        union = (painted | m).sum()
        assert union == 0 or (painted & m).sum() / union > 0.97


def test_full_pipeline_mask_stays_binary(tiny_dataset):
    ds = CardSegmentationDataset(tiny_dataset, "train", get_training_transforms(320, 240))
    for i in range(6):
        x, y = ds[i]
        assert x.shape == (3, 320, 240) and 0 <= float(x.min()) and float(x.max()) <= 1
        assert y.shape == (320, 240) and set(y.unique().tolist()) <= {0, 1}
    x, y = CardSegmentationDataset(tiny_dataset, "test", get_validation_transforms())[0]
    assert x.shape == (3, 640, 480) and y.shape == (640, 480)


@pytest.fixture
def small_copy(tiny_dataset, tmp_path):
    root = tmp_path / "ds"
    shutil.copytree(tiny_dataset, root)
    return root


def _first_stem(root):
    return sorted(os.listdir(root / "train" / "images"))[0][:-4]


def test_missing_dataset_says_how_to_generate(tmp_path):
    with pytest.raises(DataError, match="does not exist.*generate"):
        find_samples(str(tmp_path / "nope"), "train")


def test_image_without_mask_is_named(small_copy):
    stem = _first_stem(small_copy)
    os.remove(small_copy / "train" / "masks" / f"{stem}.png")
    with pytest.raises(DataError, match=f"no mask.*{stem}.jpg"):
        find_samples(str(small_copy), "train")


def test_mask_without_image_is_only_warned(small_copy, caplog):
    stem = _first_stem(small_copy)
    os.remove(small_copy / "train" / "images" / f"{stem}.jpg")
    assert len(find_samples(str(small_copy), "train")) == 59
    assert "have no image" in caplog.text


def test_empty_split(small_copy):
    shutil.rmtree(small_copy / "test" / "images")
    os.makedirs(small_copy / "test" / "images")
    with pytest.raises(DataError, match="split 'test' is empty"):
        find_samples(str(small_copy), "test")


def _sample(root):
    stem = _first_stem(root)
    return str(root / "train" / "images" / f"{stem}.jpg"), str(root / "train" / "masks" / f"{stem}.png")


def test_mask_of_other_size(small_copy):
    img, mask = _sample(small_copy)
    cv2.imwrite(mask, np.zeros((100, 80), np.uint8))
    with pytest.raises(DataError, match=r"masks/.*\.png: mask is 80x100 but its image .* is 480x640"):
        load_sample(img, mask)


def test_unreadable_and_empty_image(small_copy):
    img, mask = _sample(small_copy)
    with open(img, "wb") as f:
        f.write(b"not a jpeg")
    with pytest.raises(DataError, match=f"{os.path.basename(img)}: not a readable image"):
        load_sample(img, mask)
    open(img, "wb").close()
    with pytest.raises(DataError, match=f"{os.path.basename(img)}: empty file"):
        load_sample(img, mask)


def test_colour_mask_rejected_grey_rgb_accepted(small_copy):
    img, mask = _sample(small_copy)
    m = cv2.imread(mask, 0)
    cv2.imwrite(mask, cv2.merge([m, m, m]))
    assert load_sample(img, mask)[1].max() == 1
    cv2.imwrite(mask, cv2.merge([m, m // 2, m]))
    with pytest.raises(DataError, match="differing channels"):
        load_sample(img, mask)


def test_zero_one_mask_is_not_silently_empty(small_copy):
    img, mask = _sample(small_copy)
    m = cv2.imread(mask, 0)
    cv2.imwrite(mask, (m > 0).astype(np.uint8))
    with pytest.raises(DataError, match="0..1, expected 0/255"):
        load_sample(img, mask)


def test_antialiased_mask_is_binarised(small_copy):
    img, mask = _sample(small_copy)
    m = cv2.GaussianBlur(cv2.imread(mask, 0), (5, 5), 0)
    cv2.imwrite(mask, m)
    out = load_sample(img, mask)[1]
    assert set(np.unique(out)) <= {0, 1} and out.sum() == (m >= 128).sum()


def test_other_image_size_is_resized(small_copy):
    img, mask = _sample(small_copy)
    cv2.imwrite(img, cv2.resize(cv2.imread(img), (600, 800)))
    cv2.imwrite(mask, cv2.resize(cv2.imread(mask, 0), (600, 800), interpolation=cv2.INTER_NEAREST))
    image, m = load_sample(img, mask)
    assert image.shape == (640, 480, 3) and m.shape == (640, 480)
