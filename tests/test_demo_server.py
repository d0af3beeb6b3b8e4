import os
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
    for name in demo.REQUIRED_MODELS:
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
    ("/models/card_segmentation_pruned30.onnx", "application/octet-stream"),
])
def test_mime_types_and_headers_everywhere(client, path, mime):
    r = client.get(path)
    assert r.status_code == 200, path
    assert r.headers["content-type"].split(";")[0] == mime
    assert r.headers["cross-origin-embedder-policy"] == "require-corp"


def test_head_has_no_body(client):
    r = client.head("/models/card_segmentation_pruned30_fp32.onnx")
    assert r.status_code == 200 and r.content == b"" and r.headers["content-length"] == str(len(b"onnx-bytes"))


def test_only_get_and_head(client):
    for method in ("post", "put", "delete"):
        r = getattr(client, method)("/models/card_segmentation_pruned30.onnx")
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


def test_missing_model_is_a_startup_error(dirs):
    models, ort = dirs
    os.remove(models / "card_segmentation_pruned30.onnx")
    with pytest.raises(demo.StartupError, match="card_segmentation_pruned30.onnx.*git checkout"):
        demo.create_app(demo.DEMO_DIR, str(models), str(ort))


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
