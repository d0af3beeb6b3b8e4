"""Browser inference benchmark: median ms and FPS per model variant and WASM thread count, in
headless Chromium (the same onnxruntime-web 1.22.0 files and server as the app).

    python demo/benchmark.py                              # every .onnx in train/exported_models
    python demo/benchmark.py --models card_segmentation_fp32 --threads 1 2 --runs 30

Needs Chromium (apt-get install chromium) and Playwright for Python (requirements-dev.txt).
All rows come from one command, so they compare like for like.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
import demo  # noqa: E402

CHROMIUM_ARGS = ["--no-sandbox", "--disable-background-networking", "--disable-component-update", "--no-first-run",
                 "--disable-sync"]


def run(models: list[str], threads: list[int], runs: int, chromium: str) -> list[dict]:
    from playwright.sync_api import sync_playwright

    rows = []
    with demo.serve_in_thread() as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        for model in models:
            for n in threads:
                page = browser.new_page()
                page.goto(f"{url}bench.html?model={model}&threads={n}&runs={runs}")
                page.wait_for_function("window.benchResult !== undefined", timeout=600_000)
                r = page.evaluate("window.benchResult")
                page.close()
                if "error" in r:
                    raise SystemExit(f"{model} with {n} thread(s): {r['error']}")
                rows.append(r)
                print(f"{model:32s} threads {n}: median {r['median_ms']:7.1f} ms  {r['fps']:5.1f} FPS "
                      f"(min {r['min_ms']:.1f} ms, crossOriginIsolated={r['crossOriginIsolated']}, "
                      f"{r['cores']} cores)", flush=True)
        browser.close()
    return rows


def main(args: argparse.Namespace) -> list[dict]:
    models = args.models or sorted(f[:-5] for f in os.listdir(demo.MODELS_DIR) if f.endswith(".onnx"))
    rows = run(models, args.threads, args.runs, args.chromium)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
    return rows


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="onnxruntime-web WASM benchmark in headless Chromium", add_help=add_help)
    p.add_argument("--models", nargs="*", default=None, help="model base names (default: all in exported_models)")
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--runs", type=int, default=20)
    p.add_argument("--chromium", default="/usr/bin/chromium")
    p.add_argument("--json", default=None)
    return p


if __name__ == "__main__":
    main(get_args_parser().parse_args())
