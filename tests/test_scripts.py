"""The scripts' shared plumbing (common.py): every `__main__` goes through run_script, so bad input
is one line `error: ...` on stderr and exit code 1, never a traceback; and the device choice."""

import ast
import glob
import importlib
import logging
import os
import subprocess
import sys

import pytest
import torch

import common
from conftest import TRAIN_DIR

# script -> its arguments with a missing input; "{missing}" is the path that does not exist, "{tmp}"
# a scratch folder for whatever else the script needs (outputs, caches).
MISSING_INPUT = {
    "generate_dataset": ["--output", "{tmp}/out", "--photos", "{missing}", "--num-train", "1", "--num-test", "0"],
    "train": ["--data-path", "{missing}", "--output-dir", "{tmp}/out", "--device", "cpu", "--threads", "2"],
    "evaluate": ["{missing}", "--data-path", "{tmp}"],
    "compare": ["{missing}", "{missing}", "--data", "test={tmp}"],
    "calibrate": ["{missing}", "--data-path", "{tmp}"],
    "export": ["{missing}", "--data-path", "{tmp}", "--output-dir", "{tmp}/out"],
    "prune": ["{missing}", "--data-path", "{tmp}", "--output-dir", "{tmp}/out", "--device", "cpu", "--threads", "2"],
    "benchmark_training": ["--what", "data", "--data-path", "{missing}"],
    "model_card": ["--export-dir", "{missing}"],
    "train_corners": ["--data-path", "{missing}", "--output-dir", "{tmp}/out", "--cache-dir", "{tmp}/cache",
                      "--device", "cpu"],
    "train_corner_refiner": ["--data-path", "{missing}", "--output-dir", "{tmp}/out", "--device", "cpu"],
    "evaluate_corners": ["{missing}", "--data-path", "{tmp}"],
    "export_corners": ["{missing}", "--data-path", "{tmp}", "--output-dir", "{tmp}/out"],
    "preview_corner_augmentations": ["--data-path", "{missing}", "--output-dir", "{tmp}/out"],
    "preview_dataset": ["--photos", "{missing}", "--output", "{tmp}/sheet.png", "--count", "1"],
    "speed_candidates": ["--output-dir", "{tmp}/out", "--full", "{missing}"],
}


def _run_in_process(script, argv, monkeypatch):
    """run_script(main, get_args_parser) as `python train/<script>.py argv` runs it; returns the
    SystemExit it ends with (a string code is printed to stderr, exit status 1)."""
    module = importlib.import_module(script)
    monkeypatch.setattr(sys, "argv", [f"{script}.py", *argv])
    threads = torch.get_num_threads()
    try:
        with pytest.raises(SystemExit) as e:
            common.run_script(module.main, module.get_args_parser)
    finally:
        torch.set_num_threads(threads)   # train.py and prune.py set it for the process
    return e.value


def _argv(script, tmp_path, template=None):
    missing = str(tmp_path / "does_not_exist")
    return missing, [a.format(missing=missing, tmp=tmp_path) for a in (template or MISSING_INPUT[script])]


@pytest.mark.parametrize("script, template", [pytest.param(s, None, id=s) for s in MISSING_INPUT] + [
    pytest.param("benchmark_training", ["--what", "corner-aug", "--data-path", "{missing}"], id="benchmark_corner_aug"),
])
def test_missing_input_is_one_error_line_and_exit_1(script, template, tmp_path, monkeypatch, capsys):
    missing, argv = _argv(script, tmp_path, template)
    exit_ = _run_in_process(script, argv, monkeypatch)
    assert isinstance(exit_.code, str), f"exit code {exit_.code!r}: a message makes Python exit with status 1"
    assert exit_.code.startswith("error: ") and "\n" not in exit_.code, exit_.code
    assert missing in exit_.code, exit_.code
    assert capsys.readouterr().err == "", "nothing else on stderr (no traceback, no print)"
    assert not os.path.exists(missing)


@pytest.mark.parametrize("script", list(MISSING_INPUT))
def test_missing_input_logs_nothing_before_the_error(script, tmp_path, monkeypatch, caplog):
    """run_script logs INFO and above to stderr: any record here would be a line before the error."""
    _, argv = _argv(script, tmp_path)
    with caplog.at_level(logging.INFO):
        _run_in_process(script, argv, monkeypatch)
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.INFO] == []


def test_a_script_run_for_real_prints_one_line_and_exits_1(tmp_path):
    missing = str(tmp_path / "no_exports")
    proc = subprocess.run([sys.executable, os.path.join(TRAIN_DIR, "model_card.py"), "--export-dir", missing],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.splitlines() == [f"error: {missing}: not a folder"]
    assert proc.stdout == ""


def _main_block(path):
    tree = ast.parse(open(path).read(), path)
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) in ("__name__ == '__main__'",
                                                                  '__name__ == "__main__"'):
            return node
    return None


def test_every_script_main_goes_through_run_script():
    scripts = {}
    for path in sorted(glob.glob(os.path.join(TRAIN_DIR, "**", "*.py"), recursive=True)):
        block = _main_block(path)
        if block is not None:
            scripts[os.path.splitext(os.path.relpath(path, TRAIN_DIR))[0]] = [ast.unparse(s) for s in block.body]
    assert set(MISSING_INPUT) <= set(scripts), "a script lost its __main__ block"
    for name, body in scripts.items():
        assert body == ["run_script(main, get_args_parser)"], (name, body)


def test_select_device_refuses_cuda_without_a_gpu(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for asked in ("cuda", "cuda:1"):
        with pytest.raises(common.DataError, match=f"--device {asked} .* none is visible; use --device cpu"):
            common.select_device(asked)


def test_select_device_defaults_to_cuda_and_else_warns_of_the_cpu(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with caplog.at_level(logging.WARNING, logger="common"):
        assert common.select_device(None, "slow here") == "cpu"
    assert [(r.levelno, r.getMessage()) for r in caplog.records] == [
        (logging.WARNING, "no CUDA GPU: running on the CPU (slow here)")]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert common.select_device(None) == "cuda"


def test_select_device_does_not_warn_when_the_cpu_is_asked_for(monkeypatch, caplog):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)   # a GPU is there, the user wants the CPU
    with caplog.at_level(logging.WARNING, logger="common"):
        assert common.select_device("cpu") == "cpu"
    assert caplog.records == []
