"""End to end: Debian Chromium + Playwright, a fake camera from a .y4m file, the real server
and the committed model. Skips locally without Chromium/Playwright; fails in CI (CI=true)."""

import os
import shutil
import sys

import numpy as np
import pytest
from fake_camera import make_camera_file

sys.path.insert(0, os.path.realpath(os.path.join(os.path.dirname(__file__), "..")))
import demo  # noqa: E402

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
BASE_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run",
             "--disable-sync", "--mute-audio"]
LOAD_TIMEOUT_MS = 120_000   # first WASM compile + model download on a slow 2-core machine


def _unavailable_reason():
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install -r requirements-dev.txt)"
    if not shutil.which(CHROMIUM) and not os.path.exists(CHROMIUM):
        return f"Chromium not found at {CHROMIUM} (apt-get install -y chromium)"
    try:
        demo.check_files()
    except demo.StartupError as e:
        return str(e)
    return None


REASON = _unavailable_reason()
if REASON and os.environ.get("CI"):
    raise RuntimeError(f"end-to-end tests cannot run in CI: {REASON}")
pytestmark = pytest.mark.skipif(REASON is not None, reason=REASON or "")


@pytest.fixture(scope="module")
def server():
    with demo.serve_in_thread() as url:
        yield url


@pytest.fixture(scope="module")
def playwright():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        yield p


def _launch(playwright, extra_args):
    return playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=BASE_ARGS + extra_args)


def _fake_camera_args(path):
    return ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
            f"--use-file-for-fake-video-capture={path}"]


def _overlay_mask(page):
    """The overlay canvas' alpha channel as a (640, 480) boolean mask."""
    data = page.evaluate("""() => {
        const c = document.querySelector('[data-testid="overlay"]');
        const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
        const out = new Array(c.width * c.height);
        for (let i = 0; i < out.length; i++) out[i] = d[4 * i + 3] > 0 ? 1 : 0;
        return {w: c.width, h: c.height, a: out};
    }""")
    assert (data["w"], data["h"]) == (480, 640)
    return np.array(data["a"], bool).reshape(640, 480)


def _run_app(playwright, server, camera_path, tmp_path):
    browser = _launch(playwright, _fake_camera_args(camera_path))
    page = browser.new_page()
    page.goto(server)
    page.wait_for_function("document.querySelector('[data-testid=\"camera-select\"]').options.length > 0",
                           timeout=30_000)
    page.click('[data-testid="start"]')
    page.wait_for_function("parseFloat(document.querySelector('[data-testid=\"fps\"]').textContent) > 0",
                           timeout=LOAD_TIMEOUT_MS)
    return browser, page


def test_live_segmentation_wasm_1280x720(playwright, server, tmp_path):
    cam = str(tmp_path / "cam720.y4m")
    truth = make_camera_file(cam, 1280, 720).astype(bool)
    browser, page = _run_app(playwright, server, cam, tmp_path)
    try:
        assert cam in page.inner_text('[data-testid="camera-select"]')   # the file device's label is its path
        assert page.inner_text('[data-testid="resolution"]') == "1280x720"
        assert page.inner_text('[data-testid="backend"]') == "WASM"
        assert float(page.inner_text('[data-testid="fps"]')) > 0
        assert page.evaluate("crossOriginIsolated") is True
        assert page.is_hidden('[data-testid="error"]')
        pred = _overlay_mask(page)
        iou = (pred & truth).sum() / (pred | truth).sum()
        page.screenshot(path=str(tmp_path / "app.png"))
        assert iou >= 0.8, f"overlay vs known card mask IoU {iou:.3f}"
    finally:
        browser.close()


def test_falls_back_to_640x480(playwright, server, tmp_path):
    cam = str(tmp_path / "cam480.y4m")
    make_camera_file(cam, 640, 480)
    browser, page = _run_app(playwright, server, cam, tmp_path)
    try:
        assert page.inner_text('[data-testid="resolution"]') == "640x480"
    finally:
        browser.close()


def test_every_resolution_failing_shows_error(playwright, server, tmp_path):
    # A 320x240 source can serve neither 1280x720 nor 640x480 exactly.
    cam = str(tmp_path / "cam240.y4m")
    make_camera_file(cam, 320, 240)
    browser = _launch(playwright, _fake_camera_args(cam))
    try:
        page = browser.new_page()
        page.goto(server)
        page.wait_for_function("document.querySelector('[data-testid=\"camera-select\"]').options.length > 0",
                               timeout=30_000)
        page.click('[data-testid="start"]')
        page.wait_for_selector('[data-testid="error"]:not([hidden])', timeout=LOAD_TIMEOUT_MS)
        assert "none of the resolutions" in page.inner_text('[data-testid="error"]')
        assert page.inner_text('[data-testid="resolution"]') == "–"
    finally:
        browser.close()


def _expect_error(page, server, pattern):
    page.goto(server)
    page.wait_for_selector('[data-testid="error"]:not([hidden])', timeout=30_000)
    text = page.inner_text('[data-testid="error"]')
    assert pattern in text, text
    assert page.is_disabled('[data-testid="start"]')


def test_camera_denied_shows_error(playwright, server):
    # A fake device exists but no fake-UI auto-accept and no permission granted: denied.
    browser = _launch(playwright, ["--use-fake-device-for-media-stream"])
    try:
        context = browser.new_context(permissions=[])
        _expect_error(context.new_page(), server, "permission was denied")
    finally:
        browser.close()


def test_no_camera_shows_error(playwright, server):
    browser = _launch(playwright, ["--use-fake-ui-for-media-stream"])
    try:
        _expect_error(browser.new_page(), server, "No camera was found")
    finally:
        browser.close()


CORNER_MODEL = os.path.join(demo.MODELS_DIR, "card_corners.onnx")


@pytest.mark.skipif(not os.path.isfile(CORNER_MODEL), reason="no exported corner model (train/export_corners.py)")
def test_corner_model_runs_in_onnxruntime_web_wasm(playwright, server, tmp_path):
    """The committed card_corners.onnx loads and runs in onnxruntime-web 1.22 (WASM) in Chromium and
    gives what native onnxruntime gives on a frame with a card."""
    import base64

    import onnxruntime as ort
    from conftest import make_dataset

    from corners.data import corner_samples
    from corners.metrics import decode
    from corners.predict import load_checked, to_input

    make_dataset(tmp_path, 0, 4, seed=4242, workers=1)
    path, truth = next((p, c) for p, c in corner_samples(str(tmp_path), "test") if c is not None)
    x = to_input(load_checked(path)[None])                        # (1, 3, 640, 480) float32 0..1
    pixels = base64.b64encode(np.round(x * 255).astype(np.uint8).tobytes()).decode()

    # A blank same-origin page: /ort and /models come from the real server, with its isolation headers.
    page_url = server + "corner-check.html"
    browser = _launch(playwright, [])
    try:
        page = browser.new_page()
        page.route(page_url, lambda route: route.fulfill(
            status=200, content_type="text/html", body="<!doctype html><title>corners</title>",
            headers={"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp"}))
        page.goto(page_url)
        result = page.evaluate("""async (pixels) => {
            const ort = await import('/ort/ort.wasm.min.mjs');
            ort.env.wasm.wasmPaths = new URL('/ort/', location.href).href;
            const session = await ort.InferenceSession.create('/models/card_corners.onnx',
                                                              {executionProviders: ['wasm']});
            const bytes = Uint8Array.from(atob(pixels), (c) => c.charCodeAt(0));
            const x = new Float32Array(bytes.length);
            for (let i = 0; i < bytes.length; i++) x[i] = bytes[i] / 255;
            const feeds = {[session.inputNames[0]]: new ort.Tensor('float32', x, [1, 3, 640, 480])};
            const out = await session.run(feeds);
            const y = out.output0;
            return {inputs: session.inputNames, outputs: session.outputNames, dims: y.dims, type: y.type,
                    data: Array.from(y.data), corners: Array.from(out.corners.data),
                    score: Array.from(out.score.data)};
        }""", pixels)
    finally:
        browser.close()
    assert result["inputs"] == ["images"] and result["outputs"] == ["output0", "corners", "score"]
    assert result["dims"] == [1, 17, 6300] and result["type"] == "float32"
    web = np.array(result["data"], np.float32).reshape(1, 17, 6300)
    native, native_corners, native_score = ort.InferenceSession(
        CORNER_MODEL, providers=["CPUExecutionProvider"]).run(None, {"images": x})
    assert np.abs(web[:, 4] - native[:, 4]).max() < 1e-2, "confidences"
    corners_web, score, found = decode(web)
    corners_native, _, _ = decode(native)
    assert found[0] and score[0] > 0.5, "the card in the frame is found"
    assert np.linalg.norm(corners_web - corners_native, axis=-1).max() <= 1.0
    # The refined output (the refiner's GridSample included) agrees too, and lands on the card.
    refined_web = np.array(result["corners"], np.float32).reshape(1, 4, 2)
    assert abs(result["score"][0] - native_score[0]) < 1e-2
    assert np.linalg.norm(refined_web - native_corners, axis=-1).max() <= 1.0
    assert np.linalg.norm(refined_web[0] - 0.5 - truth, axis=-1).max() <= 10.0
