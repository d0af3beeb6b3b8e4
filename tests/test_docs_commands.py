"""Every `python train/<script>.py ...` command in the READMEs' shell blocks parses with that script's
own argument parser: the documented recipes (several of them run only on a GPU machine, where no test
reaches) cannot drift from the options the scripts take."""

import contextlib
import importlib
import io
import os
import re
import shlex

import pytest

from conftest import TRAIN_DIR

REPO = os.path.realpath(os.path.join(TRAIN_DIR, ".."))
DOCS = ["README.md", "train/README.md"]

SCRIPT = re.compile(r"^(?:[A-Z_]+=\S+\s+)*python3? train/(\w+)\.py(.*)$")
ASSIGNMENT = re.compile(r'^([A-Z_][A-Z0-9_]*)=(?:"(.*)"|(\S*))$')
VARIABLE = re.compile(r"\$\{?(\w+)(?::-[^}]*)?\}?")


def documented_commands(text: str) -> list[tuple[str, str, list[str]]]:
    """(the command as written, script, argv) for each train/ script call in text's ```sh blocks.

    Shell variables assigned in the same block (`C="--data-path ..."`) are expanded; others (a
    function's `$1`) and `<placeholders>` become `1`, which any path or number option accepts."""
    found = []
    for block in re.findall(r"```sh\n(.*?)```", text, re.S):
        variables = {}
        for line in block.replace("\\\n", " ").splitlines():
            line = re.split(r"\s#", line)[0].strip()
            m = ASSIGNMENT.match(line)
            if m:
                variables[m.group(1)] = m.group(2) if m.group(2) is not None else m.group(3)
                continue
            for part in re.split(r"&&|;|\|", line):
                m = SCRIPT.match(part.strip())
                if not m:
                    continue
                args = re.sub(r"<[^>]*>", "1", m.group(2))
                args = VARIABLE.sub(lambda v, known=variables: known.get(v.group(1), "1"), args)
                found.append((part.strip(), m.group(1), shlex.split(args)))
    return found


COMMANDS = [pytest.param(script, argv, id=f"{doc}:{i}:{script}")
            for doc in DOCS
            for i, (_, script, argv) in enumerate(documented_commands(open(os.path.join(REPO, doc)).read()))]


def test_every_script_has_a_documented_command():
    """The reference shows every script in use at least once (a change to the block syntax that hid
    the commands would otherwise pass the test below vacuously)."""
    scripts = {f[:-3] for f in os.listdir(TRAIN_DIR)
               if f.endswith(".py") and "def get_args_parser" in open(os.path.join(TRAIN_DIR, f)).read()}
    documented = {script for _, script, _ in documented_commands(open(os.path.join(REPO, "train/README.md")).read())}
    assert scripts and scripts <= documented, sorted(scripts - documented)


@pytest.mark.parametrize("script, argv", COMMANDS)
def test_documented_command_parses(script, argv):
    parser = importlib.import_module(script).get_args_parser()
    err = io.StringIO()
    try:
        with contextlib.redirect_stderr(err):
            parser.parse_args(argv)
    except SystemExit:
        pytest.fail(f"train/{script}.py {' '.join(argv)}: {err.getvalue().strip().splitlines()[-1]}")


def test_expansion_of_a_block():
    text = ("```sh\nC=\"--epochs 2 --lr 1e-4\"\n"
            "python train/train.py $C --weights <a checkpoint> \\\n  --seed $1  # x\n```\n")
    [(_, script, argv)] = documented_commands(text)
    assert script == "train"
    assert argv == ["--epochs", "2", "--lr", "1e-4", "--weights", "1", "--seed", "1"]


def _anchors(path: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens."""
    headings = re.findall(r"(?m)^#+ (.*)$", open(path).read())
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("doc", DOCS + ["docs/experiments.md", "train/exported_models/README.md"])
def test_relative_links_resolve(doc):
    """A link into the repository names a file that exists and, with `#`, a heading it has: the docs
    are cut and moved often, and a dead link is what a newcomer meets first."""
    path = os.path.join(REPO, doc)
    dead = []
    for link in re.findall(r"\]\(([^)\s]+)\)", open(path).read()):
        if re.match(r"[a-z]+:", link):
            continue
        target, _, anchor = link.partition("#")
        target = os.path.normpath(os.path.join(os.path.dirname(path), target)) if target else path
        if not os.path.exists(target) or (anchor and target.endswith(".md") and anchor not in _anchors(target)):
            dead.append(link)
    assert not dead, dead
