"""Synthetic face-like templates for benchmarks and tests (no photos needed).

Identity centres are drawn from an anisotropic Gaussian (a decaying spectrum, like real
embeddings that use some directions more than others) and normalised; each sample is its
centre plus isotropic noise, normalised. With the defaults at 128-d (SFace's size):
same-identity cosine ≈ 0.65, different-identity ≈ 0.00 ± 0.09 — the statistics measured on
real SFace templates, rather than uniform noise (which makes search look easier than it is).
"""

from __future__ import annotations

import math

import numpy as np


def _normalise(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=-1, keepdims=True)
    return x


class FaceLikeGenerator:
    """Deterministic: identity ``i`` always has the same centre for a given seed and dim."""

    def __init__(self, dim: int = 128, *, same_cos: float = 0.65, spectrum_decay: float = 0.2, seed: int = 0) -> None:
        self.dim = dim
        self.seed = seed
        scales = (1.0 + np.arange(dim)) ** (-spectrum_decay)
        self.scales = (scales / np.sqrt((scales**2).mean())).astype(np.float32)
        # cos(sample_a, sample_b) ≈ 1 / (1 + a²) for two samples of one identity.
        self.noise = math.sqrt(1.0 / same_cos - 1.0)

    BLOCK = 16_384

    def centres(self, ids: np.ndarray) -> np.ndarray:
        """Unit centres of identities ``ids`` (the same vector for an id whatever the call)."""
        ids = np.asarray(ids, np.int64)
        out = np.empty((len(ids), self.dim), np.float32)
        blocks = ids // self.BLOCK
        for b in np.unique(blocks):
            rng = np.random.default_rng([self.seed, int(b)])
            block = rng.standard_normal((self.BLOCK, self.dim), np.float32)
            sel = blocks == b
            out[sel] = block[ids[sel] - b * self.BLOCK]
        out *= self.scales
        return _normalise(out)

    def samples(self, centres: np.ndarray, per_centre: int = 1, *, seed: int = 1) -> np.ndarray:
        """``per_centre`` noisy samples of each centre: shape (len(centres) * per_centre, dim),
        ordered centre by centre."""
        rng = np.random.default_rng([self.seed, 7, seed])
        rep = np.repeat(centres, per_centre, axis=0)
        noise = rng.standard_normal(rep.shape, np.float32) * (self.noise / math.sqrt(self.dim))
        return _normalise(rep + noise)


def stats(gen: FaceLikeGenerator, n: int = 2000) -> dict[str, float]:
    """Same-identity and different-identity cosine statistics of the generator."""
    c = gen.centres(np.arange(n))
    a, b = gen.samples(c, 1, seed=1), gen.samples(c, 1, seed=2)
    same = (a * b).sum(1)
    diff = (a * np.roll(b, 1, axis=0)).sum(1)
    return {
        "same_mean": float(same.mean()),
        "same_std": float(same.std()),
        "diff_mean": float(diff.mean()),
        "diff_std": float(diff.std()),
    }
