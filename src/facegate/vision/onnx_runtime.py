"""onnxruntime plumbing shared by the detector and the embedder: sessions, thread counts, and
folding of block-quantised weights."""

from __future__ import annotations

import os
import threading
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

if TYPE_CHECKING:
    import onnx


def default_threads() -> int:
    """Cores this process may use (affinity-aware), capped at 4: neither model scales beyond."""
    try:
        cores = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        cores = os.cpu_count() or 1
    return max(1, min(4, cores))


def session(graph: bytes, threads: int) -> ort.InferenceSession:
    """A CPU session for ``graph`` with ``threads`` intra-op threads.

    No busy-waiting of the intra-op threads (``allow_spinning=0``): on a small machine shared
    with decode/detect threads, or with other processes, spinning threads steal the cores the
    real work needs. ``disable_quant_qdq`` lets ORT fold DequantizeLinear nodes over constant
    weights into float constants (the activations of these models stay float).
    """
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    options.add_session_config_entry("session.disable_quant_qdq", "1")
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"])


def fold_dequantize(model: onnx.ModelProto) -> int:
    """Replace every DequantizeLinear over constant weights by its float result, in place.

    YuNet int8bq marks per-tensor scales with a ``block_size`` attribute, which ORT refuses at
    run time ("block_size must be 0 for per-tensor quantization"), so ORT cannot fold them
    itself. The arithmetic is the operator's own: ``(x − zero_point) · scale``, with scale and
    zero point repeated ``block_size`` times along ``axis`` (or broadcast along ``axis`` when
    per-channel). Returns how many nodes were folded.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    kept: list[onnx.NodeProto] = []
    folded = 0
    for node in graph.node:
        if node.op_type != "DequantizeLinear" or not all(name in inits for name in node.input if name):
            kept.append(node)
            continue
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        x = numpy_helper.to_array(inits[node.input[0]]).astype(np.float32)
        scale = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
        has_zero = len(node.input) > 2 and node.input[2]
        zero = numpy_helper.to_array(inits[node.input[2]]).astype(np.float32) if has_zero else np.zeros_like(scale)
        block = attrs.get("block_size", 0)
        if block or (x.ndim and scale.size > 1):  # per-block or per-channel; else a scalar broadcasts
            axis = attrs.get("axis", 1) % x.ndim
            if block:
                index = np.arange(x.shape[axis]) // block
                scale, zero = np.take(scale, index, axis=axis), np.take(zero, index, axis=axis)
            else:
                shape = [1] * x.ndim
                shape[axis] = -1
                scale, zero = scale.reshape(shape), zero.reshape(shape)
        graph.initializer.append(numpy_helper.from_array(((x - zero) * scale).astype(np.float32), node.output[0]))
        folded += 1
    if folded:
        del graph.node[:]
        graph.node.extend(kept)
        used = {name for node in graph.node for name in node.input} | {o.name for o in graph.output}
        live = [i for i in graph.initializer if i.name in used]
        del graph.initializer[:]
        graph.initializer.extend(live)
    return folded


class SessionPair:
    """Two sessions over one graph, both thread-safe to run from several threads at once:

    - ``threaded``: ``threads`` intra-op threads, the lowest latency for one call at a time;
    - ``serial``: runs on the calling thread only. Batch pipelines call it from one worker per
      core, so cores are not oversubscribed and no thread waits on another's barrier. It is
      created on first use (the same session when ``threads`` is 1).
    """

    def __init__(self, graph: bytes, threads: int | None = None) -> None:
        self.threads = threads or default_threads()
        self._graph = graph
        self.threaded = session(graph, self.threads)
        self._serial: ort.InferenceSession | None = self.threaded if self.threads == 1 else None
        self._lock = threading.Lock()

    def get(self, serial: bool = False) -> ort.InferenceSession:
        if not serial:
            return self.threaded
        if self._serial is None:
            with self._lock:
                if self._serial is None:
                    self._serial = session(self._graph, 1)
        return self._serial
