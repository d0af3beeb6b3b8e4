import csv
import json
import os
import socket
import subprocess
import sys

import pytest

TRAIN_DIR = os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "train")
sys.path.insert(0, os.path.realpath(TRAIN_DIR))
os.environ["YOLO_OFFLINE"] = "1"   # before any test imports ultralytics: no hub, no update checks

import cv2  # noqa: E402
import numpy as np  # noqa: E402

import generate_dataset  # noqa: E402

# Options of every tiny segmentation run (train.py, prune.py): 64x48, 8 + 4 images, CPU.
SEG_OPTIONS = ["--size", "64", "48", "--batch-size", "4", "--val-batch-size", "4", "--max-train-images", "8",
               "--max-val-images", "4", "--workers", "0", "--no-pretrained", "--quiet", "--device", "cpu",
               "--threads", "2"]

# A card's corners (TL, TR, BR, BL) in a 480x640 frame, for hand-made corner datasets.
CARD = np.array([[100.0, 120.0], [380.0, 130.0], [370.0, 500.0], [110.0, 490.0]])


def make_dataset(path, num_train, num_test, seed=0, workers=2, backgrounds=None, preset=None, extra=()):
    """generate_dataset.py into path: the default preset, or v1 with --backgrounds (its option);
    `extra`: further options, e.g. ["--photos", DIR]. One card per frame (--multi-card 0) unless
    `extra` asks for several: the tests' counts of images and cards rely on it.

    With several workers it runs as its own process, as users run it: its pool forks, and forking
    this test process, whose torch, onnxruntime and Ultralytics (polars) threads are alive, can
    leave a worker waiting forever on a lock one of them held."""
    preset = preset or ("v1" if backgrounds else None)
    argv = (["--output", str(path), "--num-train", str(num_train), "--num-test", str(num_test), "--seed", str(seed),
             "--workers", str(workers), "--quiet"] + (["--backgrounds", str(backgrounds)] if backgrounds else [])
            + (["--preset", preset] if preset else []) + list(extra)
            + ([] if "--multi-card" in extra else ["--multi-card", "0"]))
    if workers > 1:
        subprocess.run([sys.executable, os.path.join(TRAIN_DIR, "generate_dataset.py"), *argv], check=True,
                       timeout=600)
        return None
    return generate_dataset.main(generate_dataset.get_args_parser().parse_args(argv))


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


def render_training_card(tmp_path, training) -> str:
    """model_card.py's text for one segmentation file whose export recorded `training` (a
    checkpoint_summary); the other fields are placeholders."""
    import model_card

    f = {"file": "p.onnx", "precision": "fp32", "size_bytes": 1, "opset": 13, "cpu_latency_ms": 1.0,
         "latency_runs": 1, "sha256": "0" * 64, "gate": {"mask_iou": 1.0, "max_prob_diff": 0.0, "images": 1}}
    (tmp_path / "p.json").write_text(json.dumps({"name": "p", "files": [f], "machine": "m", "onnxruntime": "x",
                                                 "export_command": "c", "training": training}))
    return model_card.render_model_card(str(tmp_path))


def read_csv(path):
    """Rows of a metrics CSV, keys stripped (Ultralytics pads its column names)."""
    with open(path) as f:
        return [{k.strip(): v for k, v in row.items()} for row in csv.DictReader(f)]


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """60 train / 12 test generated images (seed 0: a few negatives among the training images)."""
    path = tmp_path_factory.mktemp("dataset")
    make_dataset(path, 60, 12)
    return str(path)


@pytest.fixture(scope="session")
def segmentation_run(tiny_dataset, tmp_path_factory):
    """Two epochs of train.py (SEG_OPTIONS) shared by the tests that only read its outputs; it also
    keeps last.pt as it was after epoch 0 (killed_after_epoch0.pt), the state a run killed during
    epoch 1 leaves behind. Tests must not write into its folder."""
    import train

    out = tmp_path_factory.mktemp("segmentation_run")
    saved = train.atomic_torch_save

    def save_and_keep_epoch0(obj, path):
        saved(obj, path)
        if os.path.basename(path) == "last.pt" and obj["epoch"] == 0:
            saved(obj, os.path.join(os.path.dirname(path), "killed_after_epoch0.pt"))

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(train, "atomic_torch_save", save_and_keep_epoch0)
        result = train.main(train.get_args_parser().parse_args(
            ["--data-path", tiny_dataset, "--output-dir", str(out), "--epochs", "2", *SEG_OPTIONS]))
    return result


# ----------------------------------------------------------------------------- corner model

@pytest.fixture(scope="session")
def corner_dataset(tmp_path_factory):
    """6 train / 3 test generated images, a card in each (seed 0)."""
    path = tmp_path_factory.mktemp("corners")
    make_dataset(path, 6, 3)
    return str(path)


@pytest.fixture(scope="session")
def trained_corners(corner_dataset, tmp_path_factory):
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


@pytest.fixture(scope="session")
def refiner_ckpt(corner_dataset, tmp_path_factory):
    """One epoch of train_corner_refiner.py on the CPU (the script end to end)."""
    import train_corner_refiner

    out = tmp_path_factory.mktemp("refiner_run")
    args = train_corner_refiner.get_args_parser().parse_args([
        "--data-path", corner_dataset, "--output-dir", str(out), "--epochs", "1", "--batch-size", "4",
        "--workers", "0", "--device", "cpu", "--quiet"])
    return train_corner_refiner.main(args)
