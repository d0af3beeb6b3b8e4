"""ONNX helpers shared by the export, evaluation and pruning scripts.

One home for: the onnxruntime CPU session, FP16 conversion, interleaved latency, file hashes, the
machine description recorded next to a measurement, and the parity-gate error. onnx and
onnxruntime are imported where they are used, so importing this module costs nothing.
"""

from __future__ import annotations

import hashlib
import os
import platform
import statistics
import time
import warnings

import numpy as np

from common import IMAGE_HEIGHT, IMAGE_WIDTH, ScriptError


class GateError(ScriptError):
    """An exported file does not match PyTorch; the message says how."""


def ort_session(path: str, threads: int = 0):
    """An onnxruntime CPU InferenceSession; threads=0 lets onnxruntime choose (one per core)."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = threads
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def to_fp16(proto):
    """FP16 weights and compute with float32 inputs and outputs (casts at the edges).

    onnxconverter_common rather than onnxruntime.transformers' converter: the latter leaves the
    graph unsorted, which onnx.checker rejects.
    """
    from onnxconverter_common import float16

    with warnings.catch_warnings():
        # It warns once per weight below FP16's smallest normal; clamping those is intended.
        warnings.simplefilter("ignore", UserWarning)
        return float16.convert_float_to_float16(proto, keep_io_types=True)


def check_model(path: str) -> None:
    """onnx.checker's full check, as a GateError naming the file."""
    import onnx

    try:
        onnx.checker.check_model(path, full_check=True)
    except Exception as e:
        raise GateError(f"onnx.checker rejected {path}: {e}") from e


def onnx_latencies(paths: list[str], runs: int = 20, warmup: int = 3, threads: int = 0) -> list[float]:
    """Median ms of onnxruntime CPU inference at 1x3x640x480 for each file (the refiner graph on one
    card, probe_feeds).

    The files take turns run by run, so a machine that speeds up or slows down during the
    measurement (a shared VM, thermal limits) shifts every file alike and the ratios hold.
    """
    sessions = [ort_session(p, threads) for p in paths]
    x = np.random.default_rng(0).random((1, 3, IMAGE_HEIGHT, IMAGE_WIDTH), dtype=np.float32)
    feeds = [probe_feeds(sess, x) for sess in sessions]
    times: list[list[float]] = [[] for _ in paths]
    for i in range(warmup + runs):
        for sess, feed, t in zip(sessions, feeds, times):
            t0 = time.perf_counter()
            sess.run(None, feed)
            if i >= warmup:
                t.append((time.perf_counter() - t0) * 1000)
    return [statistics.median(t) for t in times]


# The quad card_corners_refiner.onnx refines when it is timed: a card in the middle of the frame,
# continuous px TL, TR, BR, BL.
PROBE_QUAD = ((140.0, 180.0), (340.0, 180.0), (340.0, 460.0), (140.0, 460.0))


def probe_feeds(sess, image: np.ndarray) -> dict:
    """The inputs to time a file with: the frame for its first input, and for the refiner graph's
    `quads` one card."""
    feeds = {sess.get_inputs()[0].name: image}
    for extra in sess.get_inputs()[1:]:
        if extra.name != "quads":
            raise ValueError(f"cannot time a model with an input {extra.name!r}")
        feeds[extra.name] = np.array([PROBE_QUAD], np.float32)
    return feeds


def conv_macs(path: str) -> int:
    """Multiply-accumulates of every Conv node of a single-input ONNX file at its declared input size.

    Convolutions are nearly all of the work of both models (the rest is element-wise), so this is
    the MACs figure of a file whatever produced it (a pruned, FP16 or frozen one). Output shapes
    come from ONNX shape inference; a Conv whose weight is cast from FP16 is traced to its initializer.
    """
    import onnx

    # data_prop: the head's Resize sizes are computed from Shape nodes; propagating them sizes what follows.
    model = onnx.shape_inference.infer_shapes(onnx.load(path), data_prop=True)
    graph = model.graph
    weights = {i.name: list(i.dims) for i in graph.initializer}
    cast_from = {n.output[0]: n.input[0] for n in graph.node if n.op_type == "Cast"}
    shapes = {v.name: [d.dim_value for d in v.type.tensor_type.shape.dim]
              for v in list(graph.value_info) + list(graph.output)}
    total = 0
    for node in graph.node:
        if node.op_type != "Conv":
            continue
        w = weights.get(node.input[1]) or weights.get(cast_from.get(node.input[1], ""))
        out = shapes.get(node.output[0])
        if not w or not out or 0 in out:
            raise ValueError(f"{path}: cannot size Conv node {node.name!r} (weight or output shape unknown)")
        # out (N, Cout, H, W), weight (Cout, Cin / groups, kH, kW)
        total += int(np.prod(out)) * int(np.prod(w[1:]))
    return total


def machine_description() -> str:
    """CPU model and core count, recorded with every latency (machines differ 3-5x)."""
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} logical cores, {platform.system()}"


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def onnxruntime_version() -> str:
    import onnxruntime

    return onnxruntime.__version__
