"""Face embedding with onnxruntime: aligned 112×112 RGB crops -> L2-normalised templates."""

from __future__ import annotations

import os

import numpy as np
import onnx
import onnxruntime as ort

from ..errors import ModelError
from ..models import ModelSpec


def _prepare_graph(data: bytes) -> bytes:
    """Make the exported graph runnable and fast under onnxruntime.

    - SFace int8bq lists its weights as graph inputs. ORT would then demand feeds for them
      (or treat them as overridable and skip constant folding), so drop every input that is
      an initializer or unused.
    - Make the batch dimension symbolic so several faces run in one call.
    """
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
    return model.SerializeToString()


class Embedder:
    """Thread-safe: onnxruntime sessions may be run from several threads at once."""

    def __init__(self, spec: ModelSpec, *, threads: int | None = None) -> None:
        if spec.kind != "embedder" or spec.embedding_dim is None:
            raise ModelError(f"{spec.id} is not an embedding model")
        self.spec = spec
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        options.intra_op_num_threads = threads or min(4, os.cpu_count() or 1)
        options.log_severity_level = 3
        # The weights are block-quantised int8 that dequantise to float constants. Letting ORT
        # fold them (instead of keeping Q/DQ pairs for int8 kernels) halves CPU latency here
        # and gives bit-identical embeddings to OpenCV's reference.
        options.add_session_config_entry("session.disable_quant_qdq", "1")
        self._session = ort.InferenceSession(
            _prepare_graph(spec.read_verified()), options, providers=["CPUExecutionProvider"]
        )
        self._input = self._session.get_inputs()[0].name
        self.dim = spec.embedding_dim

    def embed(self, crops: np.ndarray) -> np.ndarray:
        """(N, 112, 112, 3) RGB uint8 -> (N, dim) float32, rows of unit length."""
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        if len(crops) == 0:
            return np.zeros((0, self.dim), np.float32)
        x = crops.astype(np.float32).transpose(0, 3, 1, 2)
        if self.spec.mean or self.spec.std != 1.0:
            x = (x - self.spec.mean) / self.spec.std
        out = self._session.run(None, {self._input: np.ascontiguousarray(x)})[0].astype(np.float32)
        out = out.reshape(len(crops), -1)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        return out / np.maximum(norms, 1e-12)
