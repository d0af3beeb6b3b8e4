"""Browser benchmark of the web app in headless Chromium (the same onnxruntime-web 1.22.0 files and
server as the app, WASM): every model file alone, the app's scheduled per-frame work, and the app
itself on a fake camera, all from one command so the rows compare like for like.

    python demo/benchmark.py                              # every .onnx in train/exported_models
    python demo/benchmark.py --models card_segmentation_fp32 card_corners_fp32 --threads 1 2 --runs 30

Tables printed (Markdown, for the README):
1. Each model file alone: median ms and FPS of session.run on a card-like 1x3x640x480 input, per
   WASM thread count; the files are timed in interleaved rounds in one page (the order rotates each
   round), each fed through the input name its session reports.
2. The app: the work it schedules per frame (demo/js/frame-worker.js: segmentation, then the corner
   model when the mask shows a card), timed bare (session.run only) on the benchmark page, in the
   app's worker and on the page's main thread (the cost of the other cadences, segmentation alone
   and corners on every 2nd frame, is computed from the worker's rounds); then the app itself on a
   fake camera (a generated card, then a frame without one): its end-to-end FPS (frame grab,
   transfer, pre- and post-processing and drawing included) next to the bare model time of the
   same frames, measured inside the app in the same seconds, and the page's own frame rate
   meanwhile (requestAnimationFrame: how smooth the page stays).

Needs Chromium (apt-get install chromium) and Playwright for Python (requirements-dev.txt); the
fake camera comes from tests/fake_camera.py (the training stack's synthetic card renderer).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "train"))
import demo  # noqa: E402
from onnx_utils import machine_description  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run",
                 "--disable-sync", "--mute-audio"]
PAGE_TIMEOUT_MS = 900_000
# The app's per-frame work timed bare: on the benchmark page every round runs the segmentation
# model, then the corner model (what the app runs while a card is in view), in the app's worker and,
# for comparison, on the main thread. The other cadences' costs follow from the same rounds.
SCHEDULES = [
    # label, corner model every N frames (0: never), where; "derived" rows come from the worker rounds
    ("segmentation + corners (card in view)", 1, "worker"),
    ("segmentation only (no card in view)", 0, "derived"),
    ("segmentation + corners every 2nd frame (not used)", 2, "derived"),
    ("segmentation + corners, on the main thread (not used)", 1, "main"),
]

logger = logging.getLogger("benchmark")

# Runs in the app's page once it shows a card (or its first FPS figure): waits `warmup` seconds,
# then for `seconds` samples the footer once a second (FPS, and the window's mean model time and
# round trip per frame, measured inside the app at the same time) and counts animation frames.
APP_WATCH_JS = """async ([warmup, seconds]) => {
    const fpsEl = document.querySelector('[data-testid="fps"]');
    await new Promise((r) => setTimeout(r, warmup * 1000));
    const fps = []; const inference = []; const frame = [];
    let frames = 0; let maxGap = 0; let last = performance.now(); let on = true;
    const tick = (now) => { if (!on) return; frames += 1; maxGap = Math.max(maxGap, now - last); last = now;
                            requestAnimationFrame(tick); };
    requestAnimationFrame(tick);
    const t0 = performance.now();
    for (let i = 0; i < seconds; i += 1) {
        await new Promise((r) => setTimeout(r, 1000));
        fps.push(parseFloat(fpsEl.textContent));
        inference.push(parseFloat(fpsEl.dataset.inferenceMs));
        frame.push(parseFloat(fpsEl.dataset.frameMs));
    }
    on = false;
    return {fps, inference, frame, page_fps: frames * 1000 / (performance.now() - t0), max_frame_gap_ms: maxGap,
            points: document.querySelector('[data-testid="corners"]').dataset.points};
}"""


def _median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def bench_page(browser, url: str, query: str) -> dict:
    page = browser.new_page()
    try:
        page.goto(f"{url}bench.html?{query}")
        page.wait_for_function("window.benchResult !== undefined", timeout=PAGE_TIMEOUT_MS)
        result = page.evaluate("window.benchResult")
    finally:
        page.close()
    if "error" in result:
        raise SystemExit(f"benchmark.py: bench.html?{query}: {result['error']}")
    return result


def run_app(playwright, chromium: str, url: str, camera: str, warmup: int, seconds: int, card: bool) -> dict:
    """The app on a fake camera: median footer figures over `seconds` after `warmup` seconds of running
    (and showing the card)."""
    browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS + [
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={camera}"])
    try:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_function("document.querySelector('[data-testid=\"camera-select\"]').options.length > 0",
                               timeout=60_000)
        page.click('[data-testid="start"]')
        page.wait_for_function("parseFloat(document.querySelector('[data-testid=\"fps\"]').textContent) > 0",
                               timeout=PAGE_TIMEOUT_MS)
        if card:
            page.wait_for_function("document.querySelector('[data-testid=\"corners\"]').dataset.points !== ''",
                                   timeout=PAGE_TIMEOUT_MS)
        r = page.evaluate(APP_WATCH_JS, [warmup, seconds])
        error = page.inner_text('[data-testid="error"]') if page.is_visible('[data-testid="error"]') else ""
    finally:
        browser.close()
    if error:
        raise SystemExit(f"benchmark.py: the app failed: {error}")
    if card and not r["points"]:
        raise SystemExit("benchmark.py: the app lost the card during the run")
    return {"fps": _median(r["fps"]), "inference_ms": _median(r["inference"]), "frame_ms": _median(r["frame"]),
            "fps_samples": r["fps"], "page_fps": r["page_fps"], "max_frame_gap_ms": r["max_frame_gap_ms"]}


def app_model_files() -> dict:
    with open(demo.MODEL_LIST) as f:
        return json.load(f)


def run(args: argparse.Namespace) -> dict:
    from playwright.sync_api import sync_playwright

    sys.path[:0] = [os.path.join(ROOT, "tests"), os.path.join(ROOT, "train")]
    from fake_camera import make_camera_file

    out = {"models": [], "schedules": {}, "app": {}, "machine": machine_description()}
    with tempfile.TemporaryDirectory() as tmp, demo.serve_in_thread() as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            for n in args.threads:
                r = bench_page(browser, url, f"models={','.join(args.models)}&threads={n}&runs={args.runs}")
                for row in r["rows"]:
                    row.update(threads=n, cores=r["cores"], crossOriginIsolated=r["crossOriginIsolated"])
                    out["models"].append(row)
                    logger.info("%-36s threads %d: median %7.1f ms  %5.1f FPS (min %.1f ms, input '%s')",
                                row["model"], n, row["median_ms"], row["fps"], row["min_ms"], row["input"])
            if not args.skip_app:
                for where in ("worker", "main"):
                    out["schedules"][where] = r = bench_page(
                        browser, url, f"schedule={where}&cornersEvery=1&threads={args.app_threads}&runs={args.runs}")
                    logger.info("segmentation + corners, %s: %.1f + %.1f ms per frame (means), page %.1f FPS", where,
                                r["segmentation"]["mean_ms"], r["corners"]["mean_ms"], r["page_fps"])
        finally:
            browser.close()
        if not args.skip_app:
            for key, card in (("card", True), ("no_card", False)):
                cam = os.path.join(tmp, f"{key}.y4m")
                make_camera_file(cam, 1280, 720, card=card)
                a = out["app"][key] = run_app(p, args.chromium, url, cam, args.app_warmup, args.app_seconds, card)
                logger.info("app, %s: %.1f FPS (samples %s); models %.1f ms, round trip %.1f ms per frame; page "
                            "%.1f FPS", key, a["fps"], a["fps_samples"], a["inference_ms"], a["frame_ms"],
                            a["page_fps"])
    return out


def markdown(out: dict) -> str:
    lines = ["| model | input | WASM threads | median ms | FPS |", "|---|---|---|---|---|"]
    for r in out["models"]:
        lines.append(f"| `{r['model']}.onnx` | `{r['input']}` | {r['threads']} | {r['median_ms']:.1f} | "
                     f"{r['fps']:.1f} |")
    if out["schedules"]:
        files = app_model_files()
        lines += ["", f"App models on WASM: `{files['segmentation']['fp32']}`, `{files['corners']['fp32']}`.", "",
                  "| work per frame | where | bench: models ms per frame | bench: FPS | outline updates/s | "
                  "app: models ms per frame | app: models-only FPS | app: end-to-end FPS | page FPS meanwhile |",
                  "|---|---|---|---|---|---|---|---|---|"]
        app = {1: out["app"].get("card"), 0: out["app"].get("no_card")}
        worker = out["schedules"]["worker"]
        seg, cor = worker["segmentation"]["mean_ms"], worker["corners"]["mean_ms"]
        for label, every, where in SCHEDULES:
            r = out["schedules"].get(where, worker)
            # Means, not medians: a cadence that alternates frames costs the mean of its frames.
            ms = r["total"]["mean_ms"] if where != "derived" else seg + (cor / every if every else 0)
            fps = 1000 / ms
            outline = fps / every if every else 0
            e2e = app.get(every) if where != "main" else None
            cells = [f"{e2e['inference_ms']:.1f}", f"{1000 / e2e['inference_ms']:.1f}", f"{e2e['fps']:.1f}"] \
                if e2e else ["–", "–", "–"]
            page = (f"{r['page_fps']:.0f} (bench)" if where != "derived" else "") \
                + (f", {e2e['page_fps']:.0f} (app)" if e2e else "")
            lines.append(f"| {label} | {'worker' if where == 'derived' else where} | {ms:.1f} | {fps:.1f} | "
                         f"{outline:.1f} | " + " | ".join(cells) + f" | {page.strip(', ') or '–'} |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.models is None:
        args.models = sorted(f[:-5] for f in os.listdir(demo.MODELS_DIR) if f.endswith(".onnx"))
    missing = [m for m in args.models if not os.path.isfile(os.path.join(demo.MODELS_DIR, m + ".onnx"))]
    if missing:
        raise SystemExit(f"benchmark.py: no {', '.join(m + '.onnx' for m in missing)} in {demo.MODELS_DIR}")
    out = run(args)
    print(markdown(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="onnxruntime-web WASM benchmark of the web app in headless Chromium",
                                add_help=add_help)
    p.add_argument("--models", nargs="*", default=None, help="model base names (default: all in exported_models)")
    p.add_argument("--threads", type=int, nargs="+", default=[2], help="WASM thread counts for the model table")
    p.add_argument("--app-threads", type=int, default=2,
                   help="WASM threads for the app rows (the app uses all cores up to 4)")
    p.add_argument("--runs", type=int, default=20, help="timed rounds per page (after 3 warm-up rounds)")
    p.add_argument("--app-warmup", type=int, default=5, help="seconds the app runs before its FPS is sampled")
    p.add_argument("--app-seconds", type=int, default=20, help="seconds the app's FPS is sampled on the fake camera")
    p.add_argument("--skip-app", action="store_true", help="only the model table")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--json", default=None, help="also write every figure to this JSON file")
    return p


if __name__ == "__main__":
    main(get_args_parser().parse_args())
