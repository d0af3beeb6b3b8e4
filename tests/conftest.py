import os
import sys

import pytest

TRAIN_DIR = os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "train")
sys.path.insert(0, os.path.realpath(TRAIN_DIR))

import generate_dataset  # noqa: E402


def make_dataset(path, num_train, num_test, seed=0, workers=2, backgrounds=None):
    args = generate_dataset.get_args_parser().parse_args(
        ["--output", str(path), "--num-train", str(num_train), "--num-test", str(num_test), "--seed", str(seed),
         "--workers", str(workers), "--quiet"] + (["--backgrounds", str(backgrounds)] if backgrounds else []))
    return generate_dataset.main(args)


@pytest.fixture(scope="session")
def tiny_dataset(tmp_path_factory):
    """60 train / 12 test generated images (seed 0 has negatives in both)."""
    path = tmp_path_factory.mktemp("dataset")
    make_dataset(path, 60, 12)
    return str(path)
