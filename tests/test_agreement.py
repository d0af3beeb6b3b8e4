"""The mask agreement check (train/scanning/agreement.py, demo/js/agreement.js): a card is reported only
where the segmentation mask agrees with its quad. Hand-made masks of the cases that matter, and the
Python and JavaScript versions giving the same answers on them."""

import json
import os
import shutil
import subprocess

import cv2
import numpy as np
import pytest

from scanning.agreement import agreement

REPO = os.path.realpath(os.path.join(os.path.dirname(__file__), ".."))
A = np.array([[60.0, 150], [200, 150], [200, 346], [60, 346]])        # a card, continuous px
B = A + [140, 0]                                                        # touching A on its right
C = A + [160, 0]                                                        # 20 px right of A: a gap


def mask_of(*quads, size=(640, 480)) -> np.ndarray:
    """A (640, 480) float32 card probability: 1 inside the quads, 0 elsewhere."""
    m = np.zeros(size, np.float32)
    for q in quads:
        cv2.fillPoly(m, [np.round((q - 0.5) * 16).astype(np.int32)], 1.0, cv2.LINE_8, shift=4)
    return m


def union(a, b):
    return np.stack([a[0], b[1], b[2], a[3]])


CASES = {
    # name: (mask quads, quad, others, ok)
    "one card": ([A], A, [], True),
    "a card a few px off its outline": ([A], A + [3, -2], [], True),
    "touching cards, each found": ([A, B], A, [B], True),
    "touching cards as one quad, each also found": ([A, B], union(A, B), [A, B], False),
    "two cards with a gap as one quad": ([A, C], union(A, C), [], False),
    "the art box inside a card": ([A], A.mean(0) + (A - A.mean(0)) * 0.6, [], False),
    "background": ([B + [0, 200]], A, [], False),
    "a card running out of the frame": ([A - [100, 0]], A - [100, 0], [], True),
    "a card and a strip of the one beside it (not found)": ([A, B], A + [[0, 0], [80, 0], [80, 0], [0, 0]], [], False),
    # What a detector's empty or collapsed slot gives: judged "no", never an exception (the app's
    # video loop checks every raw card).
    "an empty slot (every corner at 0)": ([A], np.zeros((4, 2)), [], False),
    "a crossed quad": ([A], A[[0, 2, 1, 3]], [], False),
    "a card beside an empty slot": ([A], A, [np.zeros((4, 2))], True),
}


@pytest.mark.parametrize("name", list(CASES))
def test_agreement_cases(name):
    quads, quad, others, ok = CASES[name]
    result = agreement(mask_of(*quads), quad, others)
    assert result.ok == ok, (name, result)


def test_a_gap_shows_as_an_empty_column_and_a_union_holds_its_cards():
    gap = agreement(mask_of(A, C), union(A, C))
    assert gap.fill > 0.85 and gap.min_line < 0.5, "a 20 px gap: a column of background across the quad"
    both = agreement(mask_of(A, B), union(A, B), [A, B])
    assert both.fill == 1.0 and both.contains == 2 and (both.sides == 1.0).all()


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_the_web_app_gives_the_same_answers(tmp_path):
    """demo/js/agreement.js on the same masks and quads: the same fill, rows and columns, sides,
    contained cards and verdict (float rounding apart)."""
    cases = []
    for i, (name, (quads, quad, others, _)) in enumerate(CASES.items()):
        mask_of(*quads).tofile(tmp_path / f"{i}.bin")
        cases.append({"name": name, "mask": str(tmp_path / f"{i}.bin"), "quad": quad.ravel().tolist(),
                      "others": [o.ravel().tolist() for o in others]})
    (tmp_path / "cases.json").write_text(json.dumps(cases))
    script = tmp_path / "run.mjs"
    script.write_text(
        f"import {{ readFileSync }} from 'node:fs';\n"
        f"import {{ agreement }} from {json.dumps('file://' + os.path.join(REPO, 'demo', 'js', 'agreement.js'))};\n"
        f"const cases = JSON.parse(readFileSync({json.dumps(str(tmp_path / 'cases.json'))}, 'utf8'));\n"
        "const out = cases.map((c) => {\n"
        "  const b = readFileSync(c.mask);\n"
        "  const prob = new Float32Array(b.buffer, b.byteOffset, b.byteLength / 4);\n"
        "  return agreement(prob, c.quad, c.others);\n"
        "});\n"
        "console.log(JSON.stringify(out));\n")
    proc = subprocess.run(["node", str(script)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    for case, js in zip(cases, json.loads(proc.stdout)):
        py = agreement(mask_of(*CASES[case["name"]][0]), np.array(case["quad"]).reshape(4, 2),
                       [np.array(o).reshape(4, 2) for o in case["others"]])
        assert js["ok"] == py.ok, case["name"]
        assert js["fill"] == pytest.approx(py.fill, abs=1e-9) and js["minLine"] == pytest.approx(py.min_line, abs=1e-9)
        assert js["sides"] == pytest.approx(py.sides.tolist(), abs=1e-9) and js["contains"] == py.contains
