"""Speed benchmark of the models and the web app: onnxruntime-web WASM in headless Chromium (the
same onnxruntime-web 1.22.0 files and server as the app), native onnxruntime CPU, MACs and IoU of
every file, and the app itself, all from one command so the rows compare like for like.

    python demo/benchmark.py --threads 1 2 --iou-data unseen=dataset   # the README's tables
    python demo/benchmark.py --models card_segmentation_fp32 card_corners_fp32 --runs 30 --skip-app
    python demo/benchmark.py --models card_segmentation_fp32 --profile card_segmentation_fp32 --skip-app

Tables printed (Markdown, for the README):
1. Each model file: Conv MACs, IoU on each --iou-data test split (segmentation files), and the
   median ms of one 1x3x640x480 inference, per thread count, in WASM and natively (onnxruntime
   CPU); the files take turns in interleaved rounds (the order rotates each round), and each time
   is also given as a ratio of the frozen baseline's (the full FP16 model for WASM, the full FP32
   one natively: the speed issue's targets), measured in the same rounds. The frozen baselines are
   today's full model before the speed work (sha256 632f2aaf... FP16, f1e10ac2... FP32), taken
   from git history and checked by hash, so they stay comparable whatever the committed files become.
2. With --profile: onnxruntime-web's own per-operator profile (enableProfiling, WASM) of the named
   files (none named: the app's two WASM models): time per operator type and the costliest nodes,
   per inference.
3. The app: the work it schedules per frame (demo/js/frame-worker.js: segmentation, then the corner
   model when the mask shows a card), timed bare (session.run only) on the benchmark page, in the
   app's worker and on the page's main thread (the cost of the other cadences, segmentation alone
   and corners on every 2nd frame, is computed from the worker's rounds); then the app itself on a
   fake camera (a generated card, then a frame without one): its end-to-end FPS (frame grab,
   transfer, pre- and post-processing and drawing included) next to the bare model time of the
   same frames, measured inside the app in the same seconds, and the page's own frame rate
   meanwhile (requestAnimationFrame: how smooth the page stays).

Needs Chromium (apt-get install chromium) and Playwright for Python (requirements-dev.txt); the
fake camera comes from train/synthetic/fake_camera.py (the generator's card renderer).
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "train"))
import demo  # noqa: E402
from common import parse_named_path  # noqa: E402
from onnx_utils import conv_macs, machine_description, onnx_latencies, sha256  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run",
                 "--disable-sync", "--mute-audio"]
PAGE_TIMEOUT_MS = 900_000
# The app's per-frame work timed bare on the benchmark page, in the app's worker: every round the
# segmentation model, then the corner model every Nth round (0: never) and, where the app follows
# its card, the refiner on the rounds between. The segmentation-only cost follows from the rounds.
SCHEDULES = [
    # label, corner model every N frames, refiner between, where ("derived": from the app's rounds)
    ("segmentation + corner model on every frame (the app before it followed its card)", 1, False, "worker"),
    ("segmentation + corner model every 4th frame, the refiner on the others (the app)", 4, True, "worker"),
    ("segmentation only (no card in view)", 0, False, "derived"),
]
# The app before the speed work (the start of the speed issue), checked out from git history and
# run on the same fake camera in the same command: --baseline-app.
BASELINE_APP = "219cf49"
MOVING_SPEED_PX_S = 150.0
MIN_MOVING_PX_S = 30.0    # slower, a loop of fake_camera.moving_card_file outnumbers its frame codes
# The card of the app rows: held in the guide (pixel-index TL, TR, BR, BL of the 480x640 crop).
CARD_IN_GUIDE = [[112, 140], [368, 134], [372, 504], [108, 500]]

# The speed issue's frozen baselines: the full model as committed before the speed work. Taken
# from git history (commit, path) and checked by hash prefix.
FROZEN_BASELINES = {
    "frozen_full_fp16": ("d550c56", "train/exported_models/card_segmentation.onnx", "632f2aaf3140132f"),
    "frozen_full_fp32": ("d550c56", "train/exported_models/card_segmentation_fp32.onnx", "f1e10ac2c19f1e68"),
}
# Reference of the ratio columns: WASM times against the frozen FP16 file, native against FP32.
WASM_REFERENCE, NATIVE_REFERENCE = "frozen_full_fp16", "frozen_full_fp32"
PROFILE_TOP_NODES = 8
PROFILE_MIN_SHARE = 0.005   # operators below this share of the time share one row of the printed table

logger = logging.getLogger("benchmark")

# Runs in the app's page once it shows a card (or its first FPS figure): waits `warmup` seconds,
# then for `seconds` samples the footer once a second (FPS, and the window's mean model time and
# round trip per frame, measured inside the app at the same time) and counts animation frames.
APP_WATCH_JS = """async ([warmup, seconds]) => {
    const fpsEl = document.querySelector('[data-testid="fps"]');
    await new Promise((r) => setTimeout(r, warmup * 1000));
    const fps = []; const inference = []; const frame = [];
    const stages = {grab: [], prep: [], post: [], draw: []};
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
        for (const k of Object.keys(stages)) stages[k].push(parseFloat(fpsEl.dataset[k + 'Ms']));
    }
    on = false;
    return {fps, inference, frame, stages, page_fps: frames * 1000 / (performance.now() - t0), max_frame_gap_ms: maxGap,
            points: document.querySelector('[data-testid="corners"]').dataset.points};
}"""


def _median(values: list[float]) -> float:
    s = sorted(values)
    n = len(s)
    return s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2


def bench_page(browser, url: str, query: str, console: list[str] | None = None) -> dict:
    page = browser.new_page()
    if console is not None:
        page.on("console", lambda message: console.append(message.text))
    try:
        page.goto(f"{url}bench.html?{query}")
        page.wait_for_function("window.benchResult !== undefined", timeout=PAGE_TIMEOUT_MS)
        result = page.evaluate("window.benchResult")
    finally:
        page.close()
    if "error" in result:
        raise SystemExit(f"benchmark.py: bench.html?{query}: {result['error']}")
    return result


def frozen_baselines(folder: str) -> dict[str, str]:
    """{name: path} of the frozen baselines written into `folder` from git history; a missing commit
    (a shallow clone) is a warning and leaves them out, a wrong hash is an error."""
    out = {}
    for name, (commit, path, digest) in FROZEN_BASELINES.items():
        target = os.path.join(folder, name + ".onnx")
        try:
            with open(target, "wb") as f:
                subprocess.run(["git", "-C", ROOT, "show", f"{commit}:{path}"], stdout=f, stderr=subprocess.PIPE,
                               check=True)
        except (OSError, subprocess.CalledProcessError) as e:
            logger.warning("frozen baseline %s left out: git show %s:%s failed (%s); a full clone has it",
                           name, commit, path, (getattr(e, "stderr", None) or b"").decode().strip() or e)
            with contextlib.suppress(FileNotFoundError):
                os.remove(target)
            continue
        if not sha256(target).startswith(digest):
            raise SystemExit(f"benchmark.py: {commit}:{path} is not the frozen baseline (sha256 {digest}...)")
        out[name] = target
    return out


def summarise_profile(lines: list[str], skip_runs: int, top: int = PROFILE_TOP_NODES) -> dict:
    """onnxruntime's trace events (one JSON object per console line, as onnxruntime-web prints them)
    -> ms per inference by operator type and for the costliest nodes, the first `skip_runs` runs
    (session start, warm-up) left out. Kernels run one after another, so their times add up to the
    run's time but for the executor's own overhead, listed as "(between kernels)"."""
    events = []
    for line in lines:
        line = line.strip().rstrip(",")
        if line.startswith("{") and '"ph"' in line:
            try:
                events.append(json.loads(line))
            except ValueError:
                continue
    runs = sorted((e for e in events if e.get("name") == "model_run"), key=lambda e: e["ts"])[skip_runs:]
    if not runs:
        raise ValueError(f"no profiled inference after the first {skip_runs} in {len(events)} trace events")
    windows = [(r["ts"], r["ts"] + r["dur"]) for r in runs]
    run_us = sum(r["dur"] for r in runs)
    by_op, by_node, node_info = collections.Counter(), collections.Counter(), {}
    for e in events:
        name = e.get("name", "")
        if e.get("cat") != "Node" or not name.endswith("_kernel_time"):
            continue
        if not any(a <= e["ts"] < b for a, b in windows):
            continue
        args = e.get("args", {})
        node = name[:-len("_kernel_time")]
        by_op[args.get("op_name", "?")] += e["dur"]
        by_node[node] += e["dur"]
        out_shape = next(iter((args.get("output_type_shape") or [{}])[0].values()), None)
        node_info[node] = (args.get("op_name", "?"), out_shape)
    n = len(runs)
    ops = [{"op": op, "ms": us / n / 1000, "share": us / run_us} for op, us in by_op.most_common()]
    between = run_us - sum(by_op.values())
    ops.append({"op": "(between kernels)", "ms": between / n / 1000, "share": between / run_us})
    nodes = [{"node": node, "op": node_info[node][0], "output_shape": node_info[node][1], "ms": us / n / 1000,
              "share": us / run_us} for node, us in by_node.most_common(top)]
    return {"runs": n, "run_ms": run_us / n / 1000, "ops": ops, "nodes": nodes}


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
            "fps_samples": r["fps"], "inference_samples": r["inference"], "frame_samples": r["frame"],
            "stage_samples": r["stages"], "page_fps": r["page_fps"], "max_frame_gap_ms": r["max_frame_gap_ms"]}


# Runs in the app's page on the moving card: every 100 ms, the index of the camera frame on screen
# (coded in the frame's left margin, read from the video element) and the outline's corners.
MOVING_WATCH_JS = """async ([warmup, seconds, codeBits, codePx, codeX, codeY]) => {
    await new Promise((r) => setTimeout(r, warmup * 1000));
    const video = document.querySelector('#video');
    const corners = document.querySelector('[data-testid="corners"]');
    const fpsEl = document.querySelector('[data-testid="fps"]');
    const c = new OffscreenCanvas(codeX + codeBits * codePx, codeY + codePx);
    const g = c.getContext('2d', {willReadFrequently: true});
    const samples = [];
    const frames0 = +fpsEl.dataset.frames; const t0 = performance.now();
    while (performance.now() - t0 < seconds * 1000) {
        g.drawImage(video, 0, 0, c.width, c.height, 0, 0, c.width, c.height);
        const d = g.getImageData(0, 0, c.width, c.height).data;
        let code = 0;
        for (let b = 0; b < codeBits; b += 1) {
            const x = codeX + b * codePx + (codePx >> 1); const y = codeY + (codePx >> 1);
            if (d[4 * (y * c.width + x)] > 127) code |= 1 << b;
        }
        samples.push({code, points: corners.dataset.points});
        await new Promise((r) => setTimeout(r, 100));
    }
    return {samples, frames: +fpsEl.dataset.frames - frames0, seconds: (performance.now() - t0) / 1000};
}"""


def run_moving(playwright, chromium: str, url: str, camera: str, truth: list, warmup: int, seconds: int) -> dict:
    """The app on a card moving left and right: how far its outline trails the card on screen
    (the mean distance of the outline's corners from the card's true corners in the frame shown, px
    of the 480x640 input), sampled every 100 ms, and how often the app analysed a frame."""
    from synthetic.fake_camera import CODE_BITS, CODE_PX, CODE_X, CODE_Y

    browser = playwright.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS + [
        "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
        f"--use-file-for-fake-video-capture={camera}"])
    try:
        page = browser.new_page()
        page.goto(url)
        page.wait_for_function("document.querySelector('[data-testid=\"camera-select\"]').options.length > 0",
                               timeout=60_000)
        page.click('[data-testid="start"]')
        page.wait_for_function("document.querySelector('[data-testid=\"corners\"]').dataset.points !== ''",
                               timeout=PAGE_TIMEOUT_MS)
        r = page.evaluate(MOVING_WATCH_JS, [warmup, seconds, CODE_BITS, CODE_PX, CODE_X, CODE_Y])
    finally:
        browser.close()
    trail = []
    for s in r["samples"]:
        if not s["points"] or s["code"] >= len(truth):
            continue
        points = np.array([[float(v) for v in p.split(",")] for p in s["points"].split(" ")])
        trail.append(float(np.linalg.norm(points - truth[s["code"]], axis=1).mean()))
    if not trail:
        raise SystemExit("benchmark.py: the app never outlined the moving card")
    speed = float(np.linalg.norm(truth[1] - truth[0], axis=1).mean()) * 30
    return {"trail_px": _median(trail), "trail_samples": trail, "updates_per_s": r["frames"] / r["seconds"],
            "speed_px_s": speed}


def app_model_files() -> dict:
    with open(demo.MODEL_LIST) as f:
        return json.load(f)


def is_segmentation(path: str) -> bool:
    import onnx

    return [o.name for o in onnx.load(path, load_external_data=False).graph.output] == ["mask"]


def model_paths(args: argparse.Namespace, folder: str) -> dict[str, str]:
    """{name: .onnx path} of every file to measure: the frozen baselines, --models, --extra-model."""
    paths = {} if args.no_frozen else frozen_baselines(folder)
    paths.update({m: os.path.join(demo.MODELS_DIR, m + ".onnx") for m in args.models})
    extra = list(args.extra_model)
    for folder in args.extra_model_dir:
        if not os.path.isdir(folder):
            raise SystemExit(f"benchmark.py: --extra-model-dir {folder}: not a folder")
        extra += [f"{f[:-5]}={os.path.join(folder, f)}" for f in sorted(os.listdir(folder)) if f.endswith(".onnx")]
    for value in extra:
        name, _, path = value.partition("=")
        path = os.path.realpath(path)
        # A name of the app's folder would be served as that file in the browser: refused too.
        taken = name in paths or os.path.exists(os.path.join(demo.MODELS_DIR, name + ".onnx"))
        if not name or not os.path.isfile(path) or "/" in name or taken:
            raise SystemExit(f"benchmark.py: --extra-model {value!r}: expected a new NAME (not a file of "
                             f"{demo.MODELS_DIR}) =FILE.onnx, the file existing")
        paths[name] = path
    return paths


def file_facts(paths: dict[str, str], iou_data: list[tuple[str, str]], limit: int) -> dict:
    """Size, hash, Conv MACs and (segmentation files) IoU on each test split of every file."""
    from segmentation.evaluation import evaluate_model

    facts = {}
    for name, path in paths.items():
        try:
            macs = conv_macs(path)
        except ValueError as e:   # a Conv on a data-dependent size (the corner model's crops)
            logger.info("%s: no MACs figure (%s)", name, e)
            macs = None
        f = facts[name] = {"sha256": sha256(path), "size_bytes": os.path.getsize(path), "macs": macs, "iou": {}}
        if is_segmentation(path):
            for split, data in iou_data:
                f["iou"][split] = evaluate_model(path, data, "test", limit=limit, quiet=True)["iou"]
                logger.info("%-36s IoU %.4f on %s", name, f["iou"][split], split)
    return facts


def serve_models(paths: dict[str, str], folder: str):
    """The demo server with the app's models plus every measured file under /models/NAME.onnx."""
    models_dir = os.path.join(folder, "models")
    os.makedirs(models_dir)
    for f in os.listdir(demo.MODELS_DIR):
        if f.endswith(".onnx"):
            os.symlink(os.path.join(demo.MODELS_DIR, f), os.path.join(models_dir, f))
    for name, path in paths.items():
        link = os.path.join(models_dir, name + ".onnx")
        if not os.path.lexists(link):
            os.symlink(path, link)
    return demo.serve_in_thread(demo.create_app(models_dir=models_dir))


def run(args: argparse.Namespace) -> dict:
    from playwright.sync_api import sync_playwright

    from synthetic.fake_camera import make_camera_file

    out = {"files": {}, "models": [], "native": [], "profiles": {}, "schedules": {}, "app": {},
           "machine": machine_description(), "wasm_reference": WASM_REFERENCE, "native_reference": NATIVE_REFERENCE}
    with tempfile.TemporaryDirectory() as tmp:
        paths = model_paths(args, tmp)
        names = list(paths)
        out["files"] = file_facts(paths, args.iou_data, args.iou_limit)
        # Native first, with the browser not yet started: the two never share the cores.
        for n in args.threads:
            for name, ms in zip(names, onnx_latencies([paths[m] for m in names], args.runs, threads=n)):
                out["native"].append({"model": name, "threads": n, "median_ms": ms})
                logger.info("%-36s native, threads %d: median %7.1f ms", name, n, ms)
        with serve_models(paths, tmp) as url, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=args.chromium, headless=True, args=CHROMIUM_ARGS)
            try:
                for n in args.threads:
                    r = bench_page(browser, url, f"models={','.join(names)}&threads={n}&runs={args.runs}")
                    for row in r["rows"]:
                        row.update(threads=n, cores=r["cores"], crossOriginIsolated=r["crossOriginIsolated"])
                        out["models"].append(row)
                        logger.info("%-36s WASM, threads %d: median %7.1f ms  %5.1f FPS (min %.1f ms, input '%s')",
                                    row["model"], n, row["median_ms"], row["fps"], row["min_ms"], row["input"])
                if args.profile is not None:
                    app = app_model_files()
                    for name in args.profile or [app[m]["fp32"][:-5] for m in ("segmentation", "corners")]:
                        console = []
                        r = bench_page(browser, url, f"profile={name}&threads={args.app_threads}&runs={args.runs}",
                                       console)
                        prof = out["profiles"][name] = summarise_profile(console, r["skipRuns"])
                        logger.info("%-36s WASM profile, threads %d: %s", name, args.app_threads, ", ".join(
                            f"{o['op']} {o['share']:.0%}" for o in prof["ops"][:5]))
                if not args.skip_app:
                    for label, every, track, where in SCHEDULES:
                        if where == "derived":
                            continue
                        query = (f"schedule={where}&cornersEvery={every}&track={int(track)}&threads={args.app_threads}"
                                 f"&runs={args.runs}")
                        out["schedules"][label] = r = bench_page(browser, url, query)
                        logger.info("%s: %.1f ms per frame (mean), page %.1f FPS", label, r["total"]["mean_ms"],
                                    r["page_fps"])
            finally:
                browser.close()
            if not args.skip_app:
                apps = {"app": url}
                stack = contextlib.ExitStack()
                if args.baseline_app:
                    apps["baseline"] = stack.enter_context(serve_baseline_app(args.baseline_app, tmp))
                    out["baseline_app"] = args.baseline_app
                with stack:
                    out["app"] = run_apps(p, args, apps, tmp, make_camera_file)
    return out


def run_apps(playwright, args: argparse.Namespace, apps: dict[str, str], tmp: str, make_camera_file) -> dict:
    """Each app (name -> URL) on the fake cameras: a card, no card, and a card moving at --moving px/s.
    The apps take turns, twice over in mirrored order (A B B A), so a machine that speeds up or slows
    down during the command touches them alike; each figure is the median of both turns' samples."""
    from synthetic.fake_camera import moving_card_file

    cams = {}
    for key, card in (("card", True), ("no_card", False)):
        cams[key] = os.path.join(tmp, f"{key}.y4m")
        make_camera_file(cams[key], 1280, 720, card=card, quad=CARD_IN_GUIDE if card else None)
    moving = os.path.join(tmp, "moving.y4m")
    truth = moving_card_file(moving, 1280, 720, args.moving)
    names = list(apps)
    order = names + names[::-1]
    runs: dict[str, dict[str, list]] = {name: {} for name in names}
    for key in ("card", "no_card"):
        for name in order:
            a = run_app(playwright, args.chromium, apps[name], cams[key], args.app_warmup, args.app_seconds,
                        key == "card")
            runs[name].setdefault(key, []).append(a)
            logger.info("%s, %s: %.1f FPS (samples %s); models %.1f ms, round trip %.1f ms per frame", name, key,
                        a["fps"], a["fps_samples"], a["inference_ms"], a["frame_ms"])
    for name in order:
        m = run_moving(playwright, args.chromium, apps[name], moving, truth, args.app_warmup, args.app_seconds)
        runs[name].setdefault("moving", []).append(m)
        logger.info("%s, a card moving at %.0f px/s: the outline trails by %.1f px (median), %.1f updates/s", name,
                    args.moving, m["trail_px"], m["updates_per_s"])
    return {name: {key: merge_runs(rs) for key, rs in r.items()} for name, r in runs.items()}


def merge_runs(rs: list[dict]) -> dict:
    """One app's turns on one camera: medians over every turn's samples."""
    if "trail_samples" in rs[0]:
        trail = [t for r in rs for t in r["trail_samples"]]
        return {"trail_px": _median(trail), "trail_samples": trail,
                "updates_per_s": _median([r["updates_per_s"] for r in rs]), "speed_px_s": rs[0]["speed_px_s"]}
    out = {"fps": _median([f for r in rs for f in r["fps_samples"]]),
           "inference_ms": _median([v for r in rs for v in r["inference_samples"]]),
           "frame_ms": _median([v for r in rs for v in r["frame_samples"]]),
           "stages_ms": {k: _median([v for r in rs for v in r["stage_samples"][k]]) for k in rs[0]["stage_samples"]},
           "fps_samples": [f for r in rs for f in r["fps_samples"]],
           "page_fps": _median([r["page_fps"] for r in rs]), "max_frame_gap_ms": max(r["max_frame_gap_ms"] for r in rs)}
    return out


@contextlib.contextmanager
def serve_baseline_app(commit: str, tmp: str):
    """The web app and its models as committed at `commit` (git archive of demo/ and
    train/exported_models/), served with this checkout's onnxruntime-web files; yields its URL."""
    folder = os.path.join(tmp, f"app-{commit}")
    os.makedirs(folder)
    try:
        archive = subprocess.run(["git", "-C", ROOT, "archive", commit, "demo", "train/exported_models"],
                                 capture_output=True, check=True).stdout
    except subprocess.CalledProcessError as e:
        raise SystemExit(f"benchmark.py: --baseline-app {commit}: git archive failed "
                         f"({e.stderr.decode().strip()}); a full clone has the commit") from None
    subprocess.run(["tar", "-x", "-C", folder], input=archive, check=True)
    app = demo.create_app(os.path.join(folder, "demo"), os.path.join(folder, "train", "exported_models"), demo.ORT_DIR)
    with demo.serve_in_thread(app) as url:
        yield url


def _time_cell(ms: float | None, ref: float | None) -> str:
    if ms is None:
        return "–"
    return f"{ms:.1f}" + (f" ({ms / ref:.2f}x)" if ref else "")


def model_table(out: dict) -> list[str]:
    """Table 1: per file, MACs, IoU per split, WASM and native ms per thread count with ratios."""
    threads = sorted({r["threads"] for r in out["models"]} | {r["threads"] for r in out["native"]})
    wasm = {(r["model"], r["threads"]): r["median_ms"] for r in out["models"]}
    native = {(r["model"], r["threads"]): r["median_ms"] for r in out["native"]}
    splits = sorted({s for f in out["files"].values() for s in f["iou"]})
    names = list(out["files"]) or sorted({m for m, _ in wasm})
    head = ["model", "Conv GMACs"] + [f"IoU {s}" for s in splits] + \
        [f"WASM {n} thr, ms (x {out['wasm_reference']})" for n in threads] + \
        [f"native {n} thr, ms (x {out['native_reference']})" for n in threads]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name in names:
        f = out["files"].get(name, {})
        cells = [f"`{name}.onnx`", f"{f['macs'] / 1e9:.2f}" if f.get("macs") else "–"]
        cells += [f"{f['iou'][s]:.4f}" if s in f.get("iou", {}) else "–" for s in splits]
        cells += [_time_cell(wasm.get((name, n)), wasm.get((out["wasm_reference"], n))) for n in threads]
        cells += [_time_cell(native.get((name, n)), native.get((out["native_reference"], n))) for n in threads]
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def profile_tables(out: dict) -> list[str]:
    lines = []
    for name, prof in out["profiles"].items():
        lines += ["", f"`{name}.onnx`, WASM profile: {prof['run_ms']:.1f} ms per inference over {prof['runs']} "
                  "(profiling slows each kernel a little).", "",
                  "| operator | ms | share |", "|---|---|---|"]
        big = [o for o in prof["ops"] if o["share"] >= PROFILE_MIN_SHARE or o["op"].startswith("(")]
        small = [o for o in prof["ops"] if o not in big]
        lines += [f"| {o['op']} | {o['ms']:.1f} | {o['share']:.1%} |" for o in big]
        if small:
            lines.append(f"| {len(small)} other operators, each under {PROFILE_MIN_SHARE:.1%} | "
                         f"{sum(o['ms'] for o in small):.1f} | {sum(o['share'] for o in small):.1%} |")
        lines += ["", "| costliest nodes | operator | output shape | ms | share |", "|---|---|---|---|---|"]
        lines += [f"| `{n['node']}` | {n['op']} | {n['output_shape']} | {n['ms']:.1f} | {n['share']:.1%} |"
                  for n in prof["nodes"]]
    return lines


def markdown(out: dict) -> str:
    lines = [f"Machine: {out['machine']}.", ""] + model_table(out) + profile_tables(out)
    if out["schedules"]:
        files = app_model_files()
        lines += ["", "The app's work per frame, timed bare in its worker (`session.run` alone, means over the "
                  f"rounds; WASM files `{files['segmentation']['fp32']}`, `{files['corners']['fp32']}`, "
                  f"`{files['refiner']['fp32']}`):",
                  "", "| work per frame | models, ms per frame | FPS | page FPS meanwhile |", "|---|---|---|---|"]
        some = next(iter(out["schedules"].values()))
        for label, *_ in SCHEDULES:
            r = out["schedules"].get(label)
            ms = r["total"]["mean_ms"] if r else some["segmentation"]["mean_ms"]
            page = f"{r['page_fps']:.0f}" if r else "–"
            lines.append(f"| {label} | {ms:.1f} | {1000 / ms:.1f} | {page} |")
    if out["app"]:
        names = list(out["app"])
        speed = next((a["moving"]["speed_px_s"] for a in out["app"].values() if a.get("moving")), MOVING_SPEED_PX_S)
        lines += ["", "The app end to end on a fake camera (1280x720; medians of the per-second figures over two "
                  "turns each, the apps taking turns A B B A):", "",
                  "| app | card in view: FPS | models ms per frame | round trip ms | no card: FPS | a card moving at "
                  f"{speed:.0f} px/s: the outline trails by (px, median) | analysed frames/s |",
                  "|---|---|---|---|---|---|---|"]
        for name in names:
            a = out["app"][name]
            label = "this app" if name == "app" else f"the app at `{out.get('baseline_app')}`"
            m = a.get("moving", {})
            lines.append(f"| {label} | {a['card']['fps']:.2f} | {a['card']['inference_ms']:.1f} | "
                         f"{a['card']['frame_ms']:.1f} | {a['no_card']['fps']:.2f} | "
                         f"{m.get('trail_px', float('nan')):.1f} | {m.get('updates_per_s', float('nan')):.2f} |")
        if "baseline" in out["app"]:
            ratio = out["app"]["app"]["card"]["fps"] / out["app"]["baseline"]["card"]["fps"]
            lines += ["", f"With a card in view this app analyses {ratio:.2f}x the frames per second of the app at "
                      f"`{out.get('baseline_app')}`."]
        a = out["app"]["app"]
        lines += ["", "This app's frame, stage by stage (medians of the per-second means, ms): *grab* = "
                  "createImageBitmap of the video frame, *prep* = the worker's crop, scale and RGBA -> planar "
                  "input copy, *models* = session.run, *post* = the worker's loops over the outputs (the mask "
                  "check included), *draw* = mask overlay and outlines; *other* = the rest of the round trip "
                  "(messages, transfers, waits).", "",
                  "| frames | grab | prep | models | post | draw | other | round trip |", "|---" * 8 + "|"]
        for key, label in (("card", "card in view"), ("no_card", "no card in view")):
            st = a[key]["stages_ms"]
            other = a[key]["frame_ms"] - a[key]["inference_ms"] - sum(st.values())
            lines.append(f"| {label} | {st['grab']:.1f} | {st['prep']:.1f} | {a[key]['inference_ms']:.1f} | "
                         f"{st['post']:.1f} | {st['draw']:.1f} | {other:.1f} | {a[key]['frame_ms']:.1f} |")
    return "\n".join(lines)


def main(args: argparse.Namespace) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    if args.models is None:
        args.models = sorted(f[:-5] for f in os.listdir(demo.MODELS_DIR) if f.endswith(".onnx"))
    missing = [m for m in args.models if not os.path.isfile(os.path.join(demo.MODELS_DIR, m + ".onnx"))]
    if missing:
        raise SystemExit(f"benchmark.py: no {', '.join(m + '.onnx' for m in missing)} in {demo.MODELS_DIR}")
    args.iou_data = [parse_named_path(v, "--iou-data") for v in args.iou_data]
    if not args.moving >= MIN_MOVING_PX_S:
        raise SystemExit(f"benchmark.py: --moving {args.moving}: at least {MIN_MOVING_PX_S:.0f} px/s (the frame "
                         "codes number one loop of the card's travel)")
    out = run(args)
    out["command"] = "python demo/benchmark.py " + shlex.join(sys.argv[1:])
    print(markdown(out))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(out, f, indent=1)
    return out


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="onnxruntime-web WASM benchmark of the web app in headless Chromium",
                                add_help=add_help)
    p.add_argument("--models", nargs="*", default=None, help="model base names (default: all in exported_models)")
    p.add_argument("--extra-model", action="append", default=[], metavar="NAME=FILE",
                   help="also measure this .onnx file under NAME (repeatable): a candidate, an older file")
    p.add_argument("--extra-model-dir", action="append", default=[], metavar="DIR",
                   help="also measure every .onnx file in DIR (repeatable), e.g. train/speed_candidates.py's")
    p.add_argument("--no-frozen", action="store_true", help="leave out the frozen baselines (and the ratio columns)")
    p.add_argument("--iou-data", action="append", default=[], metavar="NAME=DIR",
                   help="score every segmentation file on DIR's test split under NAME (repeatable)")
    p.add_argument("--iou-limit", type=int, default=0, help="only the first N images of each split (0 = all)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                   help="thread counts for the model table, WASM and native")
    p.add_argument("--profile", nargs="*", default=None, metavar="NAME",
                   help="also onnxruntime-web's per-operator WASM profile (at --app-threads) of these files "
                   "(names as in the table; none given: the app's two WASM models)")
    p.add_argument("--app-threads", type=int, default=2,
                   help="WASM threads for the app rows (the app uses all cores up to 4)")
    p.add_argument("--runs", type=int, default=20, help="timed rounds per page (after 3 warm-up rounds)")
    p.add_argument("--app-warmup", type=int, default=5, help="seconds the app runs before its FPS is sampled")
    p.add_argument("--app-seconds", type=int, default=20, help="seconds the app's FPS is sampled on the fake camera")
    p.add_argument("--skip-app", action="store_true", help="only the model table")
    p.add_argument("--baseline-app", default=BASELINE_APP, metavar="COMMIT",
                   help="also run the app as committed at COMMIT (its demo/ and models) on the same cameras, "
                        "in turns with this one (default %(default)s: the app before the speed work); '' for none")
    p.add_argument("--moving", type=float, default=MOVING_SPEED_PX_S, metavar="PX_PER_S",
                   help="speed of the moving card, px of the 480x640 input per second (%(default)s)")
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--json", default=None, help="also write every figure to this JSON file")
    return p


if __name__ == "__main__":
    main(get_args_parser().parse_args())
