"""average_checkpoints.py: the output holds the exact mean of its inputs' weights, works wherever a
checkpoint does (calibrate, --weights, the model card), and bad input gets a clear error."""

import os

import pytest
import torch

import average_checkpoints
import calibrate
import model_card
import train
from common import CARD_CLASS, DataError, public_command, public_path
from conftest import SEG_OPTIONS, render_training_card
from segmentation import calibration
from segmentation import export as segmentation_export
from segmentation.model import load_checkpoint_model, to_output_stride_32


def _run(argv):
    return average_checkpoints.main(average_checkpoints.get_args_parser().parse_args(argv))


@pytest.fixture(scope="module")
def two_checkpoints(segmentation_run):
    """One run's state after epoch 0 and after epoch 1: two checkpoints of one chain."""
    out = segmentation_run["output_dir"]
    return os.path.join(out, "killed_after_epoch0.pt"), os.path.join(out, "last.pt")


def test_average_is_the_mean_of_every_weight_and_statistic(two_checkpoints, tmp_path):
    first, second = two_checkpoints
    out = str(tmp_path / "averaged.pt")
    _run([first, second, "--output", out])

    a, b = (load_checkpoint_model(p)[0].state_dict() for p in (first, second))
    model, ckpt = load_checkpoint_model(out)
    averaged = model.state_dict()
    moved = 0
    for k, v in averaged.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, (a[k] + b[k]) / 2, rtol=0, atol=1e-7, msg=k)
            moved += not torch.equal(a[k], b[k])
        else:   # batch norm's num_batches_tracked: the last input's
            assert torch.equal(v, b[k]), k
    assert moved > 10                                   # the two epochs really differ
    assert any("running_var" in k for k in averaged)    # batch-norm statistics are averaged too

    # A checkpoint for fine-tuning and export: no optimizer state, the last run's record, what was averaged.
    assert not {"optimizer", "lr_scheduler", "scaler"} & set(ckpt)
    assert ckpt["command"] == public_command(torch.load(second, map_location="cpu", weights_only=False)["command"])
    # A release records no folders of the machine it was made on (public_path: names outside the repository).
    inputs = [public_path(os.path.realpath(p)) for p in (first, second)]
    assert [e["checkpoint"] for e in ckpt["averaged_from"]] == inputs
    assert ckpt["average_command"] == public_command(f"python train/average_checkpoints.py {first} {second} "
                                                     f"--output {out}")
    x = torch.rand(1, 3, 64, 48)
    with torch.inference_mode():
        assert model(x).shape == (1, 2, 64, 48)


def test_average_calibrates_and_shows_in_the_model_card(two_checkpoints, tiny_dataset, tmp_path):
    out, calibrated = str(tmp_path / "averaged.pt"), str(tmp_path / "calibrated.pt")
    _run([*two_checkpoints, "--output", out])
    calibrate.main(calibrate.get_args_parser().parse_args([out, "--data-path", tiny_dataset, "--output", calibrated,
                                                           "--quiet"]))
    summary = segmentation_export.checkpoint_summary(torch.load(calibrated, map_location="cpu", weights_only=False))
    assert len(summary["averaged_from"]) == 2 and "calibration" in summary
    card = render_training_card(tmp_path, summary)
    first = public_path(os.path.realpath(two_checkpoints[0]))
    assert f"  - weights: the uniform average of `{first}` (best validation IoU" in card
    assert "(`python train/average_checkpoints.py" in card


def test_average_cannot_be_resumed_but_can_be_fine_tuned_from(two_checkpoints, tiny_dataset, tmp_path):
    out = str(tmp_path / "averaged.pt")
    _run([*two_checkpoints, "--output", out])
    args = ["--data-path", tiny_dataset, "--output-dir", str(tmp_path / "run"), *SEG_OPTIONS]
    with pytest.raises(DataError, match="averaged.pt: no optimizer and schedule state to resume.*--weights"):
        train.main(train.get_args_parser().parse_args([*args, "--resume", out]))
    result = train.main(train.get_args_parser().parse_args([*args, "--weights", out, "--epochs", "1"]))
    assert os.path.isfile(os.path.join(result["output_dir"], "best.pt"))


def test_bad_input_is_named(two_checkpoints, tmp_path):
    first, second = two_checkpoints
    with pytest.raises(DataError, match="at least two"):
        _run([first, "--output", str(tmp_path / "a.pt")])
    with pytest.raises(DataError, match="last.pt: given twice"):
        _run([first, second, second, "--output", str(tmp_path / "a.pt")])
    copy = str(tmp_path / "copy.pt")
    torch.save(torch.load(second, map_location="cpu", weights_only=False), copy)
    with pytest.raises(DataError, match="copy.pt: --output would overwrite"):
        _run([first, copy, "--output", copy])

    # Another pruning run, another output stride, another set of layers: named, never averaged.
    def variant(name, change):
        ckpt = torch.load(second, map_location="cpu", weights_only=False)
        ckpt["model_object"] = load_checkpoint_model(second)[0]
        change(ckpt)
        torch.save(ckpt, tmp_path / name)
        return str(tmp_path / name)

    other_pruning = variant("pruned.pt", lambda c: c.update(pruning={"ratio": 0.3}))
    with pytest.raises(DataError, match="pruned.pt: another pruning run than .*last.pt"):
        _run([other_pruning, second, "--output", str(tmp_path / "a.pt")])
    stride32 = variant("stride32.pt", lambda c: to_output_stride_32(c["model_object"]))
    with pytest.raises(DataError, match="stride32.pt: output stride 32, .*last.pt has 16"):
        _run([stride32, second, "--output", str(tmp_path / "a.pt")])
    extra = variant("extra.pt", lambda c: c["model_object"].add_module("extra", torch.nn.Conv2d(1, 1, 1)))
    with pytest.raises(DataError, match="extra.pt: not the architecture of .*last.pt \\(parameters differ, e.g. extra"):
        _run([extra, second, "--output", str(tmp_path / "a.pt")])

    # Other channel counts (another pruning ratio).
    other = str(tmp_path / "other.pt")
    ckpt = torch.load(second, map_location="cpu", weights_only=False)
    pruned = load_checkpoint_model(second)[0]
    name, conv = next((n, m) for n, m in pruned.named_modules() if isinstance(m, torch.nn.Conv2d))
    conv.weight = torch.nn.Parameter(conv.weight[: conv.weight.shape[0] // 2].clone())
    ckpt["model_object"], key = pruned, f"{name}.weight"
    torch.save(ckpt, other)
    with pytest.raises(DataError, match=f"other.pt: not the architecture of .*last.pt \\({key} is"):
        _run([other, second, "--output", str(tmp_path / "a.pt")])


def test_a_calibrated_input_is_averaged_as_it_was_before_calibration(two_checkpoints, tiny_dataset, tmp_path):
    """calibrate.py moved one bias of a release; the average takes that offset back out first, so
    averaging a release with its fine-tune gives the weights of averaging the uncalibrated pair."""
    first, second = two_checkpoints
    calibrated = str(tmp_path / "calibrated.pt")
    calibrate.main(calibrate.get_args_parser().parse_args([second, "--data-path", tiny_dataset, "--output",
                                                           calibrated, "--quiet"]))
    # Whatever offset the tiny split chose, make it one that really moves the bias.
    ckpt = torch.load(calibrated, map_location="cpu", weights_only=False)
    model = load_checkpoint_model(second)[0]
    with torch.no_grad():
        calibration.card_head(model).bias[CARD_CLASS] += 0.37
    ckpt["calibration"]["card_logit_offset"] = 0.37
    ckpt["model_object"], ckpt["model"] = model, model.state_dict()
    torch.save(ckpt, calibrated)

    plain, mixed = str(tmp_path / "plain.pt"), str(tmp_path / "mixed.pt")
    _run([first, second, "--output", plain])
    _run([first, calibrated, "--output", mixed])
    expected = load_checkpoint_model(plain)[0].state_dict()
    model, ckpt = load_checkpoint_model(mixed)
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, expected[k], rtol=0, atol=1e-6, msg=k)
    assert "calibration" not in ckpt   # the output is uncalibrated: calibrate it like any fine-tune
    assert ckpt["averaged_from"][1]["calibration_removed"] == 0.37
    assert "calibration_removed" not in ckpt["averaged_from"][0]
    # The calibrated copy of a checkpoint is that checkpoint: averaging the two would count it twice.
    with pytest.raises(DataError, match="calibrated.pt: the same weights as .*last.pt"):
        _run([second, calibrated, "--output", str(tmp_path / "twice.pt")])
    card_line = model_card._averaged_from(segmentation_export.checkpoint_summary(ckpt)["averaged_from"])
    assert card_line.endswith(f"`{public_path(os.path.realpath(calibrated))}` (best validation IoU "
                              f"{ckpt['averaged_from'][1]['best_val_iou']:.4f}; averaged without its calibration "
                              "offset +0.37)")


def test_an_average_of_an_average_names_what_it_averaged(two_checkpoints, tmp_path):
    """An averaged input carries its last input's run record, so the output names its inputs instead
    of a best validation IoU that is not its own; the weights are the mean of the two inputs."""
    first, second = two_checkpoints
    third = os.path.join(os.path.dirname(second), "best.pt")
    inner, outer = str(tmp_path / "inner.pt"), str(tmp_path / "outer.pt")
    _run([first, second, "--output", inner])
    _run([inner, third, "--output", outer])
    ckpt = torch.load(outer, map_location="cpu", weights_only=False)
    nested, plain = ckpt["averaged_from"]
    assert "best_val_iou" not in nested and [e["checkpoint"] for e in nested["averaged_from"]] == [
        public_path(os.path.realpath(first)), public_path(os.path.realpath(second))]
    assert plain["best_val_iou"] == torch.load(third, map_location="cpu", weights_only=False)["best_iou"]
    a, b, c = (load_checkpoint_model(p)[0].state_dict() for p in (first, second, third))
    averaged = load_checkpoint_model(outer)[0].state_dict()
    for k, v in averaged.items():
        if v.is_floating_point():
            torch.testing.assert_close(v, (a[k] + b[k]) / 4 + c[k] / 2, rtol=0, atol=1e-6, msg=k)
    card_line = model_card._averaged_from(segmentation_export.checkpoint_summary(ckpt)["averaged_from"])
    assert card_line.startswith(f"`{public_path(os.path.realpath(inner))}` (itself the average of "
                                f"`{public_path(os.path.realpath(first))}` "
                                "(best validation IoU ")


def test_pruned_checkpoints_average_their_model_objects(two_checkpoints, tmp_path):
    """A pruned model's checkpoint carries its module (model_object), which is what every script loads:
    the average lands there, and its state dict copy ("model") says the same."""
    paths = []
    for i, path in enumerate(two_checkpoints):
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        ckpt["model_object"], ckpt["pruning"] = load_checkpoint_model(path)[0], {"ratio": 0.3}
        paths.append(str(tmp_path / f"pruned{i}.pt"))
        torch.save(ckpt, paths[-1])
    out = str(tmp_path / "averaged.pt")
    _run([*paths, "--output", out])
    ckpt = torch.load(out, map_location="cpu", weights_only=False)
    a, b = (load_checkpoint_model(p)[0].state_dict() for p in paths)
    for k, v in ckpt["model_object"].state_dict().items():
        assert torch.equal(v, ckpt["model"][k]), k
        if v.is_floating_point():
            torch.testing.assert_close(v, (a[k] + b[k]) / 2, rtol=0, atol=1e-7, msg=k)
    assert ckpt["pruning"] == {"ratio": 0.3}
