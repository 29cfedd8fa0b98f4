"""Face embedding with onnxruntime: aligned 112×112 RGB crops -> L2-normalised templates.

Speed notes (2-core x86, SFace int8bq; measured by bench/speed.py):

- ``session.disable_quant_qdq``: the weights are block-quantised int8 that only dequantise to
  float constants (activations stay float), so letting ORT fold the DequantizeLinear nodes
  gives the same float graph OpenCV runs, without re-dequantising every call.
- PRelu rewrite (:func:`_rewrite_prelu`): ORT has no fused or blocked-layout kernel for PRelu
  with per-channel slopes; it fell back to a generic broadcasting loop and forced a layout
  change (NCHWc -> NCHW -> NCHWc) around every one of SFace's 27 PRelus. More than half the
  CPU time went there. Rewritten with Relu, per-channel Mul and Add only, every op stays in
  ORT's NCHWc layout (a per-channel Mul becomes a 1×1 depthwise conv with the following Relu
  or Add fused into it), which halves the embedding time. Templates match the original graph
  to float rounding (cosine ≥ 0.99999; tests/test_embed_perf_invariants.py).
- Sessions come from :func:`facegate.vision.onnx_runtime.session` (no spinning threads).
- Tried and rejected: ORT's int8 kernels (QLinearConv via static QDQ quantisation of the
  activations: one quantised layer already lowers template cosine to 0.9991, all layers to
  0.94); large batches (per face, 2 crops per run is fastest here, 8 is ~10 % slower: the
  activations no longer fit in cache); spinning threads.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import numpy as np
import onnxruntime as ort

from ..errors import ModelError
from ..models import ModelSpec
from .onnx_runtime import SessionPair

if TYPE_CHECKING:
    import onnx


def _prepare_graph(data: bytes, *, rewrite_prelu: bool = True) -> bytes:
    """Make the exported graph runnable and fast under onnxruntime.

    - SFace int8bq lists its weights as graph inputs. ORT would then demand feeds for them
      (or treat them as overridable and skip constant folding), so drop every input that is
      an initializer or unused.
    - Make the batch dimension symbolic so several faces run in one call.
    - Rewrite per-channel PRelu into ops ORT keeps in its blocked layout (see module doc).
    """
    import onnx  # only where a graph is prepared: a process that never loads a model skips ~1 s of imports

    model = onnx.load_from_string(data)
    inits = {i.name for i in model.graph.initializer}
    used = {name for node in model.graph.node for name in node.input}
    keep = [i for i in model.graph.input if i.name not in inits and i.name in used]
    if len(keep) != 1:
        raise ModelError(f"expected one image input, found {[i.name for i in keep]}")
    del model.graph.input[:]
    model.graph.input.extend(keep)
    for value in (model.graph.input[0], model.graph.output[0]):
        value.type.tensor_type.shape.dim[0].dim_param = "batch"
    if rewrite_prelu:
        _rewrite_prelu(model)
    serialised: bytes = model.SerializeToString()
    return serialised


def _rewrite_prelu(model: onnx.ModelProto) -> int:
    """Replace ``PRelu(x, s)`` with constant per-channel slopes s (shape (C, 1, 1) or
    (1, C, 1, 1)) by ops ORT keeps in its blocked layout. Returns how many were rewritten.

    - every slope ≤ 1: ``s·x + Relu((1 − s)·x)`` — two passes over x (each a 1×1 depthwise
      conv, one with the Relu fused, one with the Add fused). For x > 0 it is s·x + (1 − s)·x
      = x (to one rounding), for x ≤ 0 it is s·x + 0.
    - otherwise (SFace's first two layers have a few slopes up to 1.12):
      ``Relu(x) + (−s)·Relu(−x)`` — three passes, exact in floating point.
    Other PRelus (scalar or non-channel slopes, slopes computed at run time) are left alone.
    """
    from onnx import helper, numpy_helper

    graph = model.graph
    inits = {i.name: i for i in graph.initializer}
    nodes: list[onnx.NodeProto] = []
    count = 0

    def const(name: str, value: np.ndarray) -> str:
        graph.initializer.append(numpy_helper.from_array(value.astype(np.float32), name))
        return name

    for node in graph.node:
        slope = inits.get(node.input[1]) if node.op_type == "PRelu" and len(node.input) == 2 else None
        shape = tuple(slope.dims) if slope is not None else ()
        if slope is None or len(shape) not in (3, 4) or shape[-2:] != (1, 1) or (len(shape) == 4 and shape[0] != 1):
            nodes.append(node)
            continue
        s = numpy_helper.to_array(slope).astype(np.float32)
        x, y = node.input[0], node.output[0]
        t = f"{node.name or y}__prelu{count}"
        if float(s.max()) <= 1.0:
            nodes += [
                helper.make_node("Mul", [x, const(f"{t}_one_minus_slope", 1.0 - s)], [f"{t}_kx"], name=f"{t}_k"),
                helper.make_node("Relu", [f"{t}_kx"], [f"{t}_pos"], name=f"{t}_relu"),
                helper.make_node("Mul", [x, const(f"{t}_slope", s)], [f"{t}_sx"], name=f"{t}_s"),
                helper.make_node("Add", [f"{t}_sx", f"{t}_pos"], [y], name=f"{t}_sum"),
            ]
        else:
            nodes += [
                helper.make_node("Relu", [x], [f"{t}_pos"], name=f"{t}_relu_pos"),
                helper.make_node("Mul", [x, const(f"{t}_minus_one", np.full_like(s, -1.0))], [f"{t}_neg_x"], name=f"{t}_negate"),
                helper.make_node("Relu", [f"{t}_neg_x"], [f"{t}_neg"], name=f"{t}_relu_neg"),
                helper.make_node("Mul", [f"{t}_neg", const(f"{t}_minus_slope", -s)], [f"{t}_neg_part"], name=f"{t}_scale"),
                helper.make_node("Add", [f"{t}_pos", f"{t}_neg_part"], [y], name=f"{t}_sum"),
            ]
        count += 1
    if count:
        del graph.node[:]
        graph.node.extend(nodes)
    return count


def with_flip(run: Callable[[np.ndarray], np.ndarray], crops: np.ndarray) -> np.ndarray:
    """Flip test-time augmentation: each crop embedded by ``run`` together with its mirror
    image, the two vectors summed and re-normalised."""
    n = len(crops)
    both = run(np.concatenate([crops, crops[:, :, ::-1]]))
    summed = both[:n] + both[n:]
    unit: np.ndarray = summed / np.maximum(np.linalg.norm(summed, axis=1, keepdims=True), 1e-12)
    return unit


class Embedder:
    """Thread-safe. ``embed`` uses the multi-threaded session (lowest latency per call),
    ``embed_serial`` the calling thread only (for worker pools); see :class:`SessionPair`."""

    def __init__(self, spec: ModelSpec, *, threads: int | None = None) -> None:
        if spec.kind != "embedder" or spec.embedding_dim is None:
            raise ModelError(f"{spec.id} is not an embedding model")
        self.spec = spec
        self._sessions = SessionPair(_prepare_graph(spec.read_verified()), threads)
        self.threads = self._sessions.threads
        self._input = self._sessions.threaded.get_inputs()[0].name
        self.dim = spec.embedding_dim

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """(N, 112, 112, 3) RGB uint8 -> (N, dim) float32, rows of unit length."""
        return self._run(self._sessions.get(), crops)

    def embed_serial(self, crops: np.ndarray) -> np.ndarray:
        """Same as :meth:`embed`, computed on the calling thread alone (for worker pools)."""
        return self._run(self._sessions.get(serial=True), crops)

    def _run(self, runner: ort.InferenceSession, crops: np.ndarray) -> np.ndarray:
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        x = crops.astype(np.float32).transpose(0, 3, 1, 2)
        if self.spec.mean or self.spec.std != 1.0:
            x = (x - self.spec.mean) / self.spec.std
        out = runner.run(None, {self._input: np.ascontiguousarray(x)})[0].astype(np.float32)
        out = out.reshape(len(crops), -1)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        unit: np.ndarray = out / np.maximum(norms, 1e-12)
        return unit
