"""End to end: Debian Chromium + Playwright, a fake camera from a .y4m file (a generated card
with known mask and corners), the real server and the committed models. Skips locally without
Chromium/Playwright; fails in CI (CI=true)."""

import base64
import os
import re
import shutil
import sys

import cv2
import numpy as np
import pytest

from synthetic.fake_camera import make_camera_file

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


def _points(page):
    """data-points of the corners element as a (4, 2) array, None when empty."""
    text = page.get_attribute('[data-testid="corners"]', "data-points")
    if text == "":
        return None
    points = np.array([[float(v) for v in p.split(",")] for p in text.split(" ")])
    assert points.shape == (4, 2), text
    return points


def _start(page, server):
    page.goto(server)
    page.wait_for_function("document.querySelector('[data-testid=\"camera-select\"]').options.length > 0",
                           timeout=30_000)
    page.click('[data-testid="start"]')
    page.wait_for_function("parseFloat(document.querySelector('[data-testid=\"fps\"]').textContent) > 0",
                           timeout=LOAD_TIMEOUT_MS)


def _wait_for_card(page):
    page.wait_for_function("document.querySelector('[data-testid=\"corners\"]').dataset.points !== ''",
                           timeout=LOAD_TIMEOUT_MS)
    page.wait_for_selector('[data-testid="capture"]:not([disabled])', timeout=10_000)


def _scan_image(page):
    """The newest scan, decoded from the download link's blob: (H, W, 3) uint8 RGB."""
    b64 = page.evaluate("""async () => {
        const r = await fetch(document.querySelector('[data-testid="download"]').href);
        const bytes = new Uint8Array(await r.arrayBuffer());
        let s = '';
        for (let i = 0; i < bytes.length; i += 0x8000) s += String.fromCharCode(...bytes.subarray(i, i + 0x8000));
        return btoa(s);
    }""")
    img = cv2.imdecode(np.frombuffer(base64.b64decode(b64), np.uint8), cv2.IMREAD_COLOR)
    assert img is not None, "the download is not a decodable image"
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def _rectified_truth(frame, frame_corners, width, height):
    """The card warped flat from its true corners (pixel-index on both sides)."""
    dst = np.float32([[-0.5, -0.5], [width - 0.5, -0.5], [width - 0.5, height - 0.5], [-0.5, height - 0.5]])
    m = cv2.getPerspectiveTransform(np.float32(frame_corners), dst)
    return cv2.warpPerspective(frame, m, (width, height), flags=cv2.INTER_LINEAR)


def _blurred_grey_correlation(a, b):
    ga, gb = (cv2.GaussianBlur(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).astype(np.float32), (0, 0), 3) for x in (a, b))
    return float(np.corrcoef(ga.ravel(), gb.ravel())[0, 1])


def _capture_in_view(page):
    """The capture button's box and the viewport: on screen without scrolling."""
    return page.evaluate("""() => {
        const r = document.querySelector('[data-testid="capture"]').getBoundingClientRect();
        return {top: r.top + scrollY, bottom: r.bottom + scrollY, left: r.left, right: r.right,
                vw: innerWidth, vh: innerHeight, scrollY, docWidth: document.documentElement.scrollWidth};
    }""")


# A card held in the guide (demo/assets/card-guide.svg: x 102.86..377.15, y 128..512), slightly
# tilted: TL, TR, BR, BL in pixel-index coordinates of the 480x640 model input.
GUIDED_QUAD = [[112, 140], [368, 134], [372, 504], [108, 500]]


def test_card_scanner_wasm_1280x720(playwright, server, tmp_path):
    """Live segmentation and corners, capture and download on a desktop viewport; on a phone
    viewport, Capture within thumb reach, by touch, and auto-capture."""
    cam = str(tmp_path / "cam720.y4m")
    truth = make_camera_file(cam, 1280, 720, quad=GUIDED_QUAD)
    browser = _launch(playwright, _fake_camera_args(cam))
    try:
        context = browser.new_context(viewport={"width": 1280, "height": 720})
        requests = []
        context.on("request", lambda r: requests.append(r.url))
        page = context.new_page()
        _start(page, server)
        assert cam in page.inner_text('[data-testid="camera-select"]')   # the file device's label is its path
        assert page.inner_text('[data-testid="resolution"]') == "1280x720"
        assert page.inner_text('[data-testid="backend"]') == "WASM"
        assert page.evaluate("crossOriginIsolated") is True
        assert page.is_hidden('[data-testid="error"]')
        pred = _overlay_mask(page)
        iou = (pred & truth.mask.astype(bool)).sum() / (pred | truth.mask.astype(bool)).sum()
        assert iou >= 0.8, f"overlay vs known card mask IoU {iou:.3f}"

        # Live corners: TL, TR, BR, BL in pixel-index coordinates of the 480x640 model input.
        _wait_for_card(page)
        points = _points(page)
        error = np.linalg.norm(points - truth.corners, axis=1)
        assert error.max() <= 10.0, f"corner errors {error.round(1)} px; {points} vs {truth.corners}"
        box = _capture_in_view(page)
        assert box["bottom"] <= box["vh"] and box["scrollY"] == 0, box
        # The frame's stages, timed apart for demo/benchmark.py: each a time, their sum within the round trip.
        t = page.evaluate("(() => { const d = document.querySelector('[data-testid=\"fps\"]').dataset; return"
                          " [d.grabMs, d.prepMs, d.postMs, d.drawMs, d.inferenceMs, d.frameMs].map(Number); })()")
        assert all(np.isfinite(t)) and min(t) >= 0, t
        assert sum(t[:5]) <= t[5] * 1.01 and t[4] > 0, t

        # Capture: the card from the full-resolution frame, flat, 63:88, as a download.
        page.click('[data-testid="capture"]')
        page.wait_for_function("document.querySelector('[data-testid=\"scan\"]').naturalWidth > 0", timeout=30_000)
        size = page.evaluate("(() => { const i = document.querySelector('[data-testid=\"scan\"]');"
                             " return [i.naturalWidth, i.naturalHeight]; })()")
        assert size == [630, 880]
        href = page.get_attribute('[data-testid="download"]', "href")
        assert href and href.startswith("blob:")
        assert re.fullmatch(r"card-\d{8}-\d{6}\.jpg", page.get_attribute('[data-testid="download"]', "download"))
        scan = _scan_image(page)
        assert scan.shape == (880, 630, 3)
        expected = _rectified_truth(truth.frame, truth.frame_corners, 630, 880)
        r = _blurred_grey_correlation(scan, expected)
        cv2.imwrite(str(tmp_path / "scan.png"), cv2.cvtColor(np.hstack([scan, expected]), cv2.COLOR_RGB2BGR))
        assert r >= 0.9, f"scan vs the card rectified from its true corners: correlation {r:.3f}"
        assert page.is_hidden('[data-testid="error"]')
        # Both models came from the server, the worker's downloads included.
        assert any(re.search(r"/models/card_segmentation[^/]*\.onnx$", u) for u in requests), requests
        assert any(re.search(r"/models/card_corners[^/]*\.onnx$", u) for u in requests), requests
        context.close()

        # A phone held upright: Capture in the lower half, on screen without scrolling, by touch.
        phone = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True,
                                    device_scale_factor=3)
        page = phone.new_page()
        _start(page, server)
        _wait_for_card(page)
        box = _capture_in_view(page)
        assert box["top"] >= box["vh"] / 2 and box["bottom"] <= box["vh"], box
        assert box["scrollY"] == 0 and box["docWidth"] <= box["vw"], box
        page.tap('[data-testid="capture"]')
        page.wait_for_function("document.querySelector('[data-testid=\"scan\"]').naturalWidth > 0", timeout=30_000)
        box = _capture_in_view(page)   # the new scan must not push Capture away
        assert box["top"] >= box["vh"] / 2 and box["bottom"] <= box["vh"], box
        # Auto-capture: the card is steady inside the guide, so switching it on takes a second scan
        # by itself; the first moves to the strip.
        first = page.get_attribute('[data-testid="scan"]', "src")
        page.tap('[data-testid="auto-capture"]')
        page.wait_for_function("(src) => document.querySelector('[data-testid=\"scan\"]').getAttribute('src') !== src",
                               arg=first, timeout=60_000)
        assert page.eval_on_selector_all(".strip img", "els => els.map((e) => e.getAttribute('src'))") == [first]
        page.screenshot(path=str(tmp_path / "phone.png"))
    finally:
        browser.close()


# Three cards in the 480x640 crop (pixel-index TL, TR, BR, BL), the guide's card last, so that it lies
# on top: its left neighbour touches it, its right neighbour lies under its right edge.
CARDS = [[[-60, 190], [120, 190], [120, 442], [-60, 442]],
         [[270, 250], [450, 250], [450, 502], [270, 502]],
         [[120, 190], [300, 190], [300, 442], [120, 442]]]


def test_several_cards_outline_each_and_capture_the_one_in_the_guide(playwright, server, tmp_path):
    """Three cards, one touching and one overlapped by the card in the guide: that card is the app's
    (its corners in data-points, within 10 px) and Capture scans it, not a neighbour. Every card
    outlined and a sharp scan (correlation 0.9) are what a detector trained on several cards gives
    (issue #35)."""
    quads = CARDS
    cam = str(tmp_path / "cards.y4m")
    truth = make_camera_file(cam, 1280, 720, quads=quads, seed=11)
    browser = _launch(playwright, _fake_camera_args(cam))
    try:
        page = browser.new_page(viewport={"width": 1280, "height": 720})
        _start(page, server)
        # Before the first capture the scan panel shows its placeholder, not a broken image.
        assert page.is_visible('[data-testid="scan-placeholder"]') and page.is_hidden('[data-testid="scan"]')
        _wait_for_card(page)
        # A few frames more: the corner model has run since the card was found (a full set of outlines).
        before = int(page.get_attribute('[data-testid="fps"]', "data-frames"))
        page.wait_for_function("(n) => +document.querySelector('[data-testid=\"fps\"]').dataset.frames > n + 4",
                               arg=before, timeout=LOAD_TIMEOUT_MS)
        points = _points(page)
        error = np.linalg.norm(points - truth.cards[-1], axis=1)
        assert error.max() <= 10.0, f"the guide's card: corner errors {error.round(1)} px"
        outlined = int(page.get_attribute('[data-testid="corners"]', "data-cards"))
        page.click('[data-testid="capture"]')
        page.wait_for_function("document.querySelector('[data-testid=\"scan\"]').naturalWidth > 0", timeout=30_000)
        assert page.is_hidden('[data-testid="scan-placeholder"]')
        scan = _scan_image(page)
        expected = _rectified_truth(truth.frame, truth.frame_cards[-1], 630, 880)
        r = _blurred_grey_correlation(scan, expected)
        neighbour = max(_blurred_grey_correlation(scan, _rectified_truth(truth.frame, c, 630, 880))
                        for c in truth.frame_cards[:-1])
        cv2.imwrite(str(tmp_path / "cards.png"), cv2.cvtColor(np.hstack([scan, expected]), cv2.COLOR_RGB2BGR))
        assert r > neighbour, f"scan vs the guide's card {r:.3f}, vs a neighbour {neighbour:.3f}"
        assert page.is_hidden('[data-testid="error"]')
        # The app takes the guide's card (asserted above). A sharp scan of it and outlines of the others
        # need a detector trained on several cards per frame, which the shipped one is not (issue #35).
        shortfalls = [f"scan vs the guide's card {r:.3f} (0.9 needed)"] * (r < 0.9) + \
                     [f"{outlined} of {len(quads)} cards outlined"] * (outlined < len(quads))
        if shortfalls:
            pytest.xfail("issue #35, the shipped detector finds one card per frame: " + "; ".join(shortfalls))
    finally:
        browser.close()


def test_no_card_at_640x480(playwright, server, tmp_path):
    """A frame without a card, and the 640x480 fallback: no corners, Capture disabled."""
    cam = str(tmp_path / "cam480.y4m")
    make_camera_file(cam, 640, 480, card=False)
    browser = _launch(playwright, _fake_camera_args(cam))
    try:
        page = browser.new_page()
        _start(page, server)
        assert page.inner_text('[data-testid="resolution"]') == "640x480"
        # Frames keep coming; none shows a card.
        for _ in range(3):
            before = int(page.get_attribute('[data-testid="fps"]', "data-frames"))
            page.wait_for_function("(n) => +document.querySelector('[data-testid=\"fps\"]').dataset.frames > n",
                                   arg=before, timeout=LOAD_TIMEOUT_MS)
            assert page.get_attribute('[data-testid="corners"]', "data-points") == ""
            assert page.is_disabled('[data-testid="capture"]')
        assert page.is_hidden('[data-testid="error"]')
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
    assert result["inputs"] == ["images"] and result["outputs"][:3] == ["output0", "corners", "score"]
    assert result["dims"] == [1, 17, 6300] and result["type"] == "float32"
    web = np.array(result["data"], np.float32).reshape(1, 17, 6300)
    native, native_corners, native_score = ort.InferenceSession(
        CORNER_MODEL, providers=["CPUExecutionProvider"]).run(["output0", "corners", "score"], {"images": x})
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


def test_bench_page_feeds_every_model_its_own_input_name(playwright, server):
    """demo/benchmark.py's page runs every file in train/exported_models (the corner model's input
    is 'images', the segmentation model's 'image')."""
    models = sorted(f[:-5] for f in os.listdir(demo.MODELS_DIR) if f.endswith(".onnx"))
    browser = _launch(playwright, [])
    try:
        page = browser.new_page()
        page.goto(f"{server}bench.html?models={','.join(models)}&threads=2&runs=1&warmup=0")
        page.wait_for_function("window.benchResult !== undefined", timeout=LOAD_TIMEOUT_MS)
        result = page.evaluate("window.benchResult")
    finally:
        browser.close()
    assert "error" not in result, result
    inputs = {r["model"]: r["input"] for r in result["rows"]}
    assert sorted(inputs) == models
    for name, input_name in inputs.items():
        assert input_name == ("images" if name.startswith("card_corners") else "image"), inputs
    assert all(r["median_ms"] > 0 for r in result["rows"])


def test_bench_page_profiles_a_model_per_operator(playwright, server):
    """benchmark.py --profile: onnxruntime-web's trace of the deployed WASM model comes through the
    page's console and sums to its inference time, convolutions first, with the rewritten head
    (a Sigmoid, no Softmax)."""
    sys.path.insert(0, demo.DEMO_DIR)
    import benchmark

    browser = _launch(playwright, [])
    console = []
    try:
        result = benchmark.bench_page(browser, server, "profile=card_segmentation_fp32&threads=2&runs=2&warmup=0",
                                      console)
    finally:
        browser.close()
    prof = benchmark.summarise_profile(console, result["skipRuns"])
    assert prof["runs"] == 2
    ops = {o["op"]: o["share"] for o in prof["ops"]}
    assert sum(ops.values()) == pytest.approx(1.0)
    assert "Softmax" not in ops and ops.get("Sigmoid", 0) > 0
    assert max(ops, key=ops.get) in ("Conv", "FusedConv") and ops.get("Conv", 0) + ops.get("FusedConv", 0) > 0.5
