"""Serve the cardscan web app and its models (card segmentation and card corners).

    python demo.py                         # http://0.0.0.0:7860 (or $PORT)
    python demo.py --host 127.0.0.1 --port 8000

Routes: /              the app (demo/index.html, /js, /css, /assets)
        /ort/...       onnxruntime-web 1.22.0 from demo/node_modules (npm ci --prefix demo)
        /models/X.onnx train/exported_models/X.onnx; the app's files are listed in demo/js/models.json,
                       and the server refuses to start when one is missing
Every response carries COOP/COEP/CORP so the page is cross-origin isolated and onnxruntime-web
may use WASM threads. GET and HEAD only.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import mimetypes
import os
import socket
import sys
import threading
import time

from starlette.applications import Starlette
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.responses import FileResponse, PlainTextResponse
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

ROOT = os.path.dirname(os.path.realpath(__file__))
DEMO_DIR = os.path.join(ROOT, "demo")
MODELS_DIR = os.path.join(ROOT, "train", "exported_models")
ORT_DIR = os.path.join(DEMO_DIR, "node_modules", "onnxruntime-web", "dist")
# The one list of the model files the app loads, read by demo/js/inference.js too.
MODEL_LIST = os.path.join(DEMO_DIR, "js", "models.json")
REQUIRED_ORT = ("ort.webgpu.min.mjs", "ort-wasm-simd-threaded.jsep.mjs", "ort-wasm-simd-threaded.jsep.wasm")

# Python's table lacks or varies on these; browsers refuse module scripts and streaming WASM
# compilation with the wrong type.
for ext, mime in ((".mjs", "text/javascript"), (".js", "text/javascript"), (".wasm", "application/wasm"),
                  (".onnx", "application/octet-stream"), (".svg", "image/svg+xml")):
    mimetypes.add_type(mime, ext)

ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
    "Cross-Origin-Resource-Policy": "same-origin",
}

logger = logging.getLogger("demo")


class StartupError(Exception):
    pass


def required_models(model_list: str = MODEL_LIST) -> list[str]:
    """The .onnx file names in demo/js/models.json ({"model": {"fp16": file, "fp32": file}, ...})."""
    try:
        with open(model_list) as f:
            models = json.load(f)
        names = [name for files in models.values() for name in (files["fp16"], files["fp32"])]
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
        raise StartupError(f"cannot read the model list {model_list}: {e!r}; it maps each model to "
                           f'{{"fp16": "<file>.onnx", "fp32": "<file>.onnx"}}') from e
    bad = [n for n in names if not isinstance(n, str) or "/" in n or "\\" in n or not n.endswith(".onnx")]
    if bad:
        raise StartupError(f"{model_list}: not plain .onnx file names: {bad}")
    return sorted(set(names))


def check_files(models_dir: str = MODELS_DIR, ort_dir: str = ORT_DIR, model_list: str = MODEL_LIST) -> None:
    """Fail at start-up, with the command that fixes it, rather than with a 404 in the browser."""
    missing = [m for m in required_models(model_list) if not os.path.isfile(os.path.join(models_dir, m))]
    if missing:
        raise StartupError(f"model file(s) missing in {models_dir}: {', '.join(missing)} (listed in {model_list}). "
                           f"Restore the committed models with `git checkout -- train/exported_models` or export "
                           f"your own with train/export.py and train/export_corners.py (train/README.md).")
    missing = [f for f in REQUIRED_ORT if not os.path.isfile(os.path.join(ort_dir, f))]
    if missing:
        raise StartupError(f"onnxruntime-web files missing in {ort_dir}: {', '.join(missing)}. Install them with "
                           f"`npm ci --prefix demo` (or `make demo`).")


def model_endpoint(models_dir: str):
    async def serve_model(request):
        name = request.path_params["name"]
        # Only plain .onnx file names: no separators, no dot-files, so no way out of the folder.
        if "/" in name or "\\" in name or name.startswith(".") or not name.endswith(".onnx"):
            raise HTTPException(404)
        path = os.path.join(models_dir, name)
        if not os.path.isfile(path):
            raise HTTPException(404)
        return FileResponse(path, media_type="application/octet-stream")
    return serve_model


def create_app(demo_dir: str = DEMO_DIR, models_dir: str = MODELS_DIR, ort_dir: str = ORT_DIR,
               check: bool = True) -> Starlette:
    if check:
        check_files(models_dir, ort_dir, os.path.join(demo_dir, "js", "models.json"))

    async def index(request):
        return FileResponse(os.path.join(demo_dir, "index.html"), media_type="text/html")

    async def bench(request):
        return FileResponse(os.path.join(demo_dir, "bench.html"), media_type="text/html")

    routes = [
        Route("/", index, methods=["GET", "HEAD"]),
        Route("/bench.html", bench, methods=["GET", "HEAD"]),
        Route("/index.html", index, methods=["GET", "HEAD"]),
        Route("/models/{name}", model_endpoint(models_dir), methods=["GET", "HEAD"]),
        Mount("/ort", StaticFiles(directory=ort_dir, check_dir=check)),
        Mount("/js", StaticFiles(directory=os.path.join(demo_dir, "js"))),
        Mount("/css", StaticFiles(directory=os.path.join(demo_dir, "css"))),
        Mount("/assets", StaticFiles(directory=os.path.join(demo_dir, "assets"))),
    ]
    return Starlette(routes=routes, middleware=[Middleware(IsolationMiddleware)])


class IsolationMiddleware:
    """Adds the cross-origin isolation headers to every response and refuses all but GET/HEAD."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if scope["method"] not in ("GET", "HEAD"):
            response = PlainTextResponse("method not allowed", status_code=405,
                                         headers={"Allow": "GET, HEAD", **ISOLATION_HEADERS})
            await response(scope, receive, send)
            return

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                MutableHeaders(scope=message).update(ISOLATION_HEADERS)
            await send(message)

        await self.app(scope, receive, send_with_headers)


@contextlib.contextmanager
def serve_in_thread(app=None, host: str = "127.0.0.1"):
    """Run the app on a free local port in a background thread (tests, benchmarks); yields its URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind((host, 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app or create_app(), host=host, port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not server.started and thread.is_alive() and time.time() < deadline:
        time.sleep(0.05)
    if not server.started:
        server.should_exit = True
        raise RuntimeError(f"demo server did not start on {host}:{port}")
    try:
        yield f"http://{host}:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def get_args_parser(add_help: bool = True) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description="Serve the cardscan web app", add_help=add_help)
    p.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "7860")))
    return p


def main(args: argparse.Namespace) -> None:
    import uvicorn

    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        app = create_app()
    except StartupError as e:
        sys.exit(f"demo.py: {e}")
    shown = "localhost" if args.host in ("0.0.0.0", "::") else args.host
    logger.info("cardscan demo: open http://%s:%d/ (camera access needs localhost or HTTPS)", shown, args.port)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning")


if __name__ == "__main__":
    main(get_args_parser().parse_args())
