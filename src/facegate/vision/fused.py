"""Embedders by spec, including score-level fusion of several as one template.

A fused template is ``concat(√w₁·t₁, √w₂·t₂, …)`` of the parts' unit templates with weights
summing to 1: it has unit length, and the dot product of two fused templates is
``Σ wᵢ·cosᵢ``, the weighted sum of the parts' cosine scores. The gallery, its index and the
service therefore treat it like any other model (cosine against a calibrated threshold).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import numpy as np

from ..models import DLIB_RESNET, ModelSpec
from .dlib_embed import DlibEmbedder
from .embed import Embedder, with_flip


class CropEmbedder(Protocol):
    spec: ModelSpec
    dim: int

    def embed(self, crops: np.ndarray) -> np.ndarray: ...


class FusedEmbedder:
    """Thread-safe; (N, 112, 112, 3) aligned RGB crops -> (N, dim) unit fused templates."""

    def __init__(self, spec: ModelSpec, *, threads: int | None = None) -> None:
        self.spec = spec
        self.dim = int(spec.embedding_dim or 0)
        self._parts = [_part(p, threads) for p in spec.parts]
        self._scale = np.sqrt(np.asarray(spec.weights, dtype=np.float32))
        self.threads = max(getattr(p, "threads", 1) for p in self._parts)

    def embed(self, crops: np.ndarray) -> np.ndarray:
        return self._fuse(crops, [p.embed for p in self._parts])

    def embed_serial(self, crops: np.ndarray) -> np.ndarray:
        """As :meth:`embed`, on the calling thread alone (for worker pools)."""
        return self._fuse(crops, [getattr(p, "embed_serial", p.embed) for p in self._parts])

    def _fuse(self, crops: np.ndarray, runs: list[Callable[[np.ndarray], np.ndarray]]) -> np.ndarray:
        crops = np.asarray(crops)
        if crops.ndim == 3:
            crops = crops[None]
        vectors = [with_flip(run, crops) if flip else run(crops) for run, flip in zip(runs, self.spec.flip)]
        return np.concatenate([v * s for v, s in zip(vectors, self._scale)], axis=1).astype(np.float32)


def _part(spec: ModelSpec, threads: int | None) -> CropEmbedder:
    return DlibEmbedder(spec) if spec.id == DLIB_RESNET.id else Embedder(spec, threads=threads)


def build_embedder(spec: ModelSpec, *, threads: int | None = None) -> Embedder | FusedEmbedder:
    """The embedder that runs ``spec``: a fused one when it has parts, else an ONNX one."""
    return FusedEmbedder(spec, threads=threads) if spec.parts else Embedder(spec, threads=threads)
