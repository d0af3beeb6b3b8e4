"""train.py under torchrun: two CPU processes (gloo) on a tiny generated dataset."""

import csv
import os
import re
import subprocess
import sys

import pytest
import torch

import train
from conftest import TRAIN_DIR, make_dataset
from segmentation.model import load_checkpoint_model

# Batch size 1 and one thread in every process: the distributed run and the single-process check
# below then compute each image exactly alike, so the metrics compare exactly.
OPTIONS = ["--size", "64", "48", "--batch-size", "2", "--val-batch-size", "1", "--lr", "1e-2", "--workers", "0",
           "--no-pretrained", "--quiet", "--device", "cpu", "--threads", "1"]


def _torchrun(*args):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           os.path.join(TRAIN_DIR, "train.py"), *OPTIONS, *args]
    proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout
    return proc.stdout


def _single_process_eval(data, checkpoint):
    args = train.resolve_args(train.get_args_parser().parse_args(["--data-path", data, *OPTIONS]))
    args.distributed, args.rank, args.world_size, args.local_rank = False, 0, 1, 0
    model, _ = load_checkpoint_model(checkpoint)
    _, _, val_data = train.build_datasets(args)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        return train.evaluate(model, train.make_loader(val_data, args, False, 0), args)
    finally:
        torch.set_num_threads(threads)


def test_torchrun_rank0_logs_and_saves_reduced_metrics(tmp_path):
    # 5 validation images on 2 ranks: DistributedSampler's padding would count one twice.
    data, out = tmp_path / "data", tmp_path / "out"
    make_dataset(data, 8, 5)
    first = _torchrun("--data-path", str(data), "--output-dir", str(out), "--epochs", "1")
    resumed = _torchrun("--data-path", str(data), "--epochs", "2", "--resume", str(out / "last.pt"))

    # Rank 0 speaks for the run: every INFO line once.
    for log, lines in ((first, ["data: 8 train / 5 test images", "epoch 0/0 "]),
                       (resumed, ["data: 8 train / 5 test images", "resumed from ", "epoch 1/1 "])):
        for line in lines:
            assert log.count(line) == 1, (line, log)
    assert sorted(os.listdir(out)) == ["best.pt", "curves.png", "last.pt", "metrics.csv", "tensorboard"]
    assert len(os.listdir(out / "tensorboard")) == 2   # one events file per run

    ckpt = torch.load(out / "last.pt", weights_only=False)
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert ckpt["epoch"] == 1 and [int(r["epoch"]) for r in rows] == [0, 1]
    # The logged, saved metrics are those of the whole split: what one process measures on the
    # saved weights.
    expected = _single_process_eval(str(data), str(out / "last.pt"))
    assert ckpt["metrics"]["iou"] == expected["iou"] and ckpt["metrics"]["dice"] == expected["dice"]
    assert float(rows[-1]["iou"]) == pytest.approx(expected["iou"], abs=1e-12)
    # The loss also tells whether the ranks evaluated the same weights and BatchNorm statistics.
    assert ckpt["metrics"]["val_loss"] == pytest.approx(expected["val_loss"], rel=1e-9)
    logged = re.search(r"epoch 1/1 .* IoU (\d\.\d+) ", resumed).group(1)
    assert logged == f"{expected['iou']:.4f}"
