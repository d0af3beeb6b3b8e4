"""Card segmentation dataset and its Albumentations 2.0.8 pipelines.

Layout (the users' real dataset and generate_dataset.py alike):
    <root>/<split>/images/<stem>.jpg   RGB photo, 480 x 640 (resized when it is not)
    <root>/<split>/masks/<stem>.png    single channel, 255 = card, 0 = background
"""

from __future__ import annotations

import logging
import os

# Albumentations checks PyPI for a newer version when imported: nothing here reaches for the network.
os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")

import albumentations as A  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch.utils.data import Dataset  # noqa: E402

from common import IMAGE_HEIGHT, IMAGE_WIDTH, MASK_EXT, DataError

logger = logging.getLogger(__name__)

IMAGE_EXTS = (".jpg", ".jpeg", ".png")
GENERATE_HINT = "generate a synthetic one with `make dataset` (or python train/generate_dataset.py --output DIR)"


def find_samples(root: str, split: str) -> list[tuple[str, str]]:
    """(image, mask) path pairs of one split, paired by file stem, sorted by stem.

    An image without a mask is an error (training on it would need a guess); a mask without an
    image is only warned about, since it cannot change what is trained.
    """
    if not os.path.isdir(root):
        raise DataError(f"dataset folder {root} does not exist; {GENERATE_HINT}")
    img_dir, mask_dir = os.path.join(root, split, "images"), os.path.join(root, split, "masks")
    for d in (img_dir, mask_dir):
        if not os.path.isdir(d):
            raise DataError(f"{d} does not exist: expected {root}/{split}/images and {root}/{split}/masks; "
                            f"{GENERATE_HINT}")
    images = {os.path.splitext(f)[0]: f for f in os.listdir(img_dir)
              if f.lower().endswith(IMAGE_EXTS) and not f.startswith(".")}
    masks = {os.path.splitext(f)[0]: f for f in os.listdir(mask_dir)
             if f.lower().endswith(MASK_EXT) and not f.startswith(".")}
    if not images:
        raise DataError(f"split '{split}' is empty: no {'/'.join(IMAGE_EXTS)} images in {img_dir}")
    missing = sorted(set(images) - set(masks))
    if missing:
        shown = ", ".join(os.path.join(img_dir, images[s]) for s in missing[:5])
        raise DataError(f"{len(missing)} image(s) have no mask {mask_dir}/<stem>{MASK_EXT}: {shown}"
                        + (" ..." if len(missing) > 5 else ""))
    orphans = sorted(set(masks) - set(images))
    if orphans:
        logger.warning("%d mask(s) in %s have no image and are ignored, e.g. %s", len(orphans), mask_dir,
                       masks[orphans[0]])
    return [(os.path.join(img_dir, images[s]), os.path.join(mask_dir, masks[s])) for s in sorted(images)]


def _imread(path: str, flags: int) -> np.ndarray:
    if os.path.getsize(path) == 0:
        raise DataError(f"{path}: empty file")
    img = cv2.imread(path, flags)
    if img is None:
        raise DataError(f"{path}: not a readable image")
    return img


def read_image(path: str) -> np.ndarray:
    """(H, W, 3) uint8 RGB, or DataError naming the file."""
    return cv2.cvtColor(_imread(path, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def read_mask(path: str) -> np.ndarray:
    """(H, W) uint8 in {0, 1}: the mask binarised at 128 (anti-aliased edges are fine)."""
    mask = _imread(path, cv2.IMREAD_UNCHANGED)
    if mask.dtype != np.uint8:
        raise DataError(f"{path}: mask is {mask.dtype}, expected 8-bit single channel 0/255")
    if mask.ndim == 3:
        # A grey mask saved as RGB(A) carries the same information; a coloured one does not.
        if mask.shape[2] in (3, 4) and (np.array_equal(mask[..., 0], mask[..., 1])
                                        and np.array_equal(mask[..., 0], mask[..., 2])):
            mask = mask[..., 0]
        else:
            raise DataError(f"{path}: mask has {mask.shape[2]} differing channels, expected single channel "
                            f"0/255 (white = card)")
    peak = int(mask.max())
    if 0 < peak < 128:
        # e.g. a 0/1 label map: binarising at 128 would silently turn it into an empty mask.
        raise DataError(f"{path}: mask values are 0..{peak}, expected 0/255 (white = card)")
    return (mask >= 128).astype(np.uint8)


def load_sample(image_path: str, mask_path: str) -> tuple[np.ndarray, np.ndarray]:
    """Image (640, 480, 3) uint8 RGB and mask (640, 480) uint8 {0, 1}."""
    image, mask = read_image(image_path), read_mask(mask_path)
    if image.shape[:2] != mask.shape[:2]:
        raise DataError(f"{mask_path}: mask is {mask.shape[1]}x{mask.shape[0]} but its image {image_path} is "
                        f"{image.shape[1]}x{image.shape[0]}")
    if image.shape[:2] != (IMAGE_HEIGHT, IMAGE_WIDTH):
        image = cv2.resize(image, (IMAGE_WIDTH, IMAGE_HEIGHT), interpolation=cv2.INTER_AREA)
        mask = cv2.resize(mask, (IMAGE_WIDTH, IMAGE_HEIGHT), interpolation=cv2.INTER_NEAREST)
    return image, mask


class CardSegmentationDataset(Dataset):
    """Returns (image (3, H, W) float32 in 0..1, mask (H, W) int64 in {0, 1}).

    Normalisation lives in the model (model.py), so the exported ONNX takes plain 0..1 RGB.
    """

    def __init__(self, root: str, split: str, transforms: A.Compose | None = None):
        self.root, self.split = root, split
        self.samples = find_samples(root, split)
        self.transforms = transforms

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, mask = load_sample(*self.samples[index])
        if self.transforms is not None:
            out = self.transforms(image=image, mask=mask)
            image, mask = out["image"], out["mask"]
        image_t = torch.from_numpy(np.ascontiguousarray(image)).permute(2, 0, 1).float().div_(255.0)
        return image_t, torch.from_numpy(np.ascontiguousarray(mask)).long()


def get_training_transforms(height: int = IMAGE_HEIGHT, width: int = IMAGE_WIDTH) -> A.Compose:
    """Geometry first (mask follows with nearest interpolation), then photometric (image only).

    The output size is (height, width): lower it for the fast low-resolution epochs of the CPU
    recipe; the network is fully convolutional.
    """
    return A.Compose([
        # Random zoom-in keeping the 3:4 portrait aspect; also resizes to the training size.
        A.RandomSizedCrop(min_max_height=(int(IMAGE_HEIGHT * 0.6), IMAGE_HEIGHT), size=(height, width),
                          w2h_ratio=IMAGE_WIDTH / IMAGE_HEIGHT, p=1.0),
        A.HorizontalFlip(p=0.5),
        A.Affine(scale=(0.75, 1.1), translate_percent=(-0.1, 0.1), rotate=(-25, 25), shear=(-6, 6),
                 border_mode=cv2.BORDER_CONSTANT, fill=0, fill_mask=0, p=0.5),
        A.Perspective(scale=(0.02, 0.08), fill=0, fill_mask=0, p=0.3),
        A.ColorJitter(brightness=0.3, contrast=0.3, saturation=0.4, hue=0.05, p=0.6),
        A.RandomGamma(gamma_limit=(70, 140), p=0.2),
        A.ToGray(p=0.05),
        A.OneOf([A.GaussianBlur(sigma_limit=(0.5, 2.0)), A.MotionBlur(blur_limit=(3, 9)),
                 A.Defocus(radius=(2, 5))], p=0.3),
        A.OneOf([A.GaussNoise(std_range=(0.02, 0.08)), A.ISONoise(intensity=(0.1, 0.5))], p=0.3),
        A.ImageCompression(quality_range=(40, 95), p=0.3),
        # Dead pixels and small occluders (stickers, sleeve glare): the mask stays as it is, the
        # card is still there under them.
        A.PixelDropout(dropout_prob=0.01, p=0.2),
        A.Erasing(scale=(0.01, 0.06), ratio=(0.3, 3.3), fill="random_uniform", p=0.25),
    ])


def get_validation_transforms(height: int = IMAGE_HEIGHT, width: int = IMAGE_WIDTH) -> A.Compose:
    return A.Compose([A.Resize(height, width, interpolation=cv2.INTER_AREA)])
