import os
import shutil
import subprocess
import sys

import pytest
from starlette.testclient import TestClient

sys.path.insert(0, os.path.realpath(os.path.join(os.path.dirname(__file__), "..")))
import demo  # noqa: E402


@pytest.fixture
def dirs(tmp_path):
    models, ort = tmp_path / "models", tmp_path / "ort"
    models.mkdir()
    ort.mkdir()
    for name in demo.required_models():
        (models / name).write_bytes(b"onnx-bytes")
    for name in demo.REQUIRED_ORT:
        (ort / name).write_bytes(b"\0asm" if name.endswith(".wasm") else b"export {};")
    (tmp_path / "secret.txt").write_text("do not serve")
    return models, ort


@pytest.fixture
def client(dirs):
    models, ort = dirs
    return TestClient(demo.create_app(demo.DEMO_DIR, str(models), str(ort)))


def test_index_and_isolation_headers(client):
    r = client.get("/")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert 'data-testid="camera-select"' in r.text
    assert r.headers["cross-origin-opener-policy"] == "same-origin"
    assert r.headers["cross-origin-embedder-policy"] == "require-corp"
    assert r.headers["cross-origin-resource-policy"] == "same-origin"


@pytest.mark.parametrize("path, mime", [
    ("/js/app.js", "text/javascript"),
    ("/ort/ort.webgpu.min.mjs", "text/javascript"),
    ("/ort/ort-wasm-simd-threaded.jsep.wasm", "application/wasm"),
    ("/assets/card-guide.svg", "image/svg+xml"),
    ("/css/style.css", "text/css"),
    ("/js/models.json", "application/json"),
    ("/js/frame-worker.js", "text/javascript"),
    ("/models/card_segmentation.onnx", "application/octet-stream"),
    ("/models/card_corners_fp32.onnx", "application/octet-stream"),
])
def test_mime_types_and_headers_everywhere(client, path, mime):
    r = client.get(path)
    assert r.status_code == 200, path
    assert r.headers["content-type"].split(";")[0] == mime
    assert r.headers["cross-origin-embedder-policy"] == "require-corp"


def test_head_has_no_body(client):
    r = client.head("/models/card_segmentation_fp32.onnx")
    assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == str(len(b"onnx-bytes"))


def test_only_get_and_head(client):
    for method in ("post", "put", "delete"):
        r = getattr(client, method)("/models/card_segmentation.onnx")
        assert r.status_code == 405
        assert r.headers["cross-origin-opener-policy"] == "same-origin"


@pytest.mark.parametrize("path", [
    "/models/..%2Fsecret.txt", "/models/%2e%2e%2fsecret.txt", "/js/../../secret.txt", "/js/..%2F..%2Fsecret.txt",
    "/models/.hidden.onnx", "/ort/../secret.txt", "/models/secret.txt",
])
def test_traversal_refused(client, path):
    r = client.get(path)
    assert r.status_code in (400, 404) and "do not serve" not in r.text


def test_unknown_model_404(client):
    assert client.get("/models/nope.onnx").status_code == 404


def test_the_app_needs_both_models_their_fp32_twins_and_the_refiner():
    # demo/js/models.json, the list demo/js/inference.js builds its URLs from.
    assert demo.required_models() == ["card_corners.onnx", "card_corners_fp32.onnx", "card_corners_refiner.onnx",
                                      "card_segmentation.onnx", "card_segmentation_fp32.onnx"]


@pytest.mark.parametrize("name", ["card_segmentation.onnx", "card_segmentation_fp32.onnx", "card_corners.onnx",
                                  "card_corners_fp32.onnx", "card_corners_refiner.onnx"])
def test_missing_model_is_a_startup_error(dirs, name):
    models, ort = dirs
    os.remove(models / name)
    with pytest.raises(demo.StartupError, match=rf"missing in .*: {name} .*git checkout -- train/exported_models"):
        demo.create_app(demo.DEMO_DIR, str(models), str(ort))


def test_demo_py_refuses_to_start_naming_the_missing_model(tmp_path):
    """`python demo.py` in a copy of the layout where one model is missing: exit 1, one line naming it."""
    shutil.copy(os.path.join(demo.ROOT, "demo.py"), tmp_path / "demo.py")
    shutil.copytree(os.path.join(demo.DEMO_DIR, "js"), tmp_path / "demo" / "js")
    ort = tmp_path / "demo" / "node_modules" / "onnxruntime-web" / "dist"
    ort.mkdir(parents=True)
    for name in demo.REQUIRED_ORT:
        (ort / name).write_bytes(b"x")
    models = tmp_path / "train" / "exported_models"
    models.mkdir(parents=True)
    for name in demo.required_models():
        if name != "card_corners_fp32.onnx":
            (models / name).write_bytes(b"onnx-bytes")
    r = subprocess.run([sys.executable, str(tmp_path / "demo.py"), "--port", "0"], capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 1
    assert "card_corners_fp32.onnx" in r.stderr and "git checkout -- train/exported_models" in r.stderr, r.stderr
    assert "card_segmentation.onnx" not in r.stderr.split("(listed in")[0], r.stderr


@pytest.mark.parametrize("text", ["not json", '{"segmentation": {"fp16": "a.onnx"}}', '{"x": {"fp16": "../a.onnx", '
                                  '"fp32": "b.onnx"}}', "[1, 2]"])
def test_bad_model_list_is_a_startup_error(tmp_path, text):
    path = tmp_path / "models.json"
    path.write_text(text)
    with pytest.raises(demo.StartupError, match="models.json"):
        demo.required_models(str(path))


def test_missing_ort_is_a_startup_error(dirs):
    models, ort = dirs
    os.remove(ort / "ort-wasm-simd-threaded.jsep.wasm")
    with pytest.raises(demo.StartupError, match="npm ci --prefix demo"):
        demo.create_app(demo.DEMO_DIR, str(models), str(ort))


def test_defaults_bind_all_interfaces_on_7860(monkeypatch):
    monkeypatch.delenv("PORT", raising=False)
    args = demo.get_args_parser().parse_args([])
    assert (args.host, args.port) == ("0.0.0.0", 7860)
    monkeypatch.setenv("PORT", "9001")
    assert demo.get_args_parser().parse_args([]).port == 9001


def test_the_space_image_copies_exactly_the_apps_models():
    """The Dockerfile ships the models in demo/js/models.json, and no other (the unpruned ones
    would only make the Space's image bigger)."""
    import re

    with open(os.path.join(demo.ROOT, "Dockerfile")) as f:
        copied = set(re.findall(r"train/exported_models/([\w.*-]+\.onnx)", f.read()))
    assert copied == set(demo.required_models())
