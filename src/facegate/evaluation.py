"""Verification metrics from scored pairs: TAR at fixed FMR, EER, thresholds, DET curves.

Failures to acquire (no usable face in either image) are passed as NaN scores. They count
as rejections — a genuine pair lost to FTA is a false non-match, an impostor pair is a
correct rejection — and are reported separately as the FTA rate.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .calibration import SUPPORTED_FMRS
from .components import component_of
from .extras import require


@dataclass(frozen=True)
class EvalReport:
    genuine: int
    impostor: int
    fta_pairs: int
    fta_rate: float  # fraction of pairs where at least one image gave no usable face
    eer: float
    eer_threshold: float
    tar_at_fmr: dict[float, float]
    threshold_at_fmr: dict[float, float]
    fmr_resolution: float = field(default=0.0)

    def to_dict(self) -> dict[str, object]:
        return {
            "genuine_pairs": self.genuine,
            "impostor_pairs": self.impostor,
            "fta_pairs": self.fta_pairs,
            "fta_rate": self.fta_rate,
            "eer": self.eer,
            "eer_threshold": self.eer_threshold,
            "tar_at_fmr": {f"{k:g}": v for k, v in self.tar_at_fmr.items()},
            "threshold_at_fmr": {f"{k:g}": v for k, v in self.threshold_at_fmr.items()},
            "fmr_resolution": self.fmr_resolution,
        }


def threshold_at_fmr(impostor_scores: np.ndarray, fmr: float) -> float:
    """Smallest threshold t with (impostor scores ≥ t) / n ≤ fmr (decisions are score ≥ t)."""
    imp = np.sort(np.asarray(impostor_scores, dtype=np.float64))[::-1]
    allowed = int(np.floor(fmr * len(imp)))  # impostors that may pass
    if allowed >= len(imp):
        return float(imp[-1])
    # Threshold just above the (allowed+1)-th highest impostor score.
    return float(np.nextafter(imp[allowed], np.inf))


def evaluate(scores: np.ndarray, same: np.ndarray, fmrs: tuple[float, ...] = SUPPORTED_FMRS) -> EvalReport:
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same).astype(bool)
    failed = np.isnan(scores)
    filled = np.where(failed, -np.inf, scores)  # FTA -> always rejected
    gen, imp = filled[same], filled[~same]
    if len(gen) == 0 or len(imp) == 0:
        raise ValueError("need both genuine and impostor pairs")
    thresholds = {f: threshold_at_fmr(imp, f) for f in fmrs}
    tar = {f: float((gen >= t).mean()) for f, t in thresholds.items()}
    eer, eer_t = _eer(gen, imp)
    return EvalReport(
        genuine=int(len(gen)),
        impostor=int(len(imp)),
        fta_pairs=int(failed.sum()),
        fta_rate=float(failed.mean()),
        eer=eer,
        eer_threshold=eer_t,
        tar_at_fmr=tar,
        threshold_at_fmr=thresholds,
        fmr_resolution=1.0 / len(imp),
    )


def det_points(scores: np.ndarray, same: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(thresholds, FMR, FNMR) over every distinct score."""
    scores = np.asarray(scores, dtype=np.float64)
    same = np.asarray(same).astype(bool)
    filled = np.where(np.isnan(scores), -np.inf, scores)
    gen, imp = np.sort(filled[same]), np.sort(filled[~same])
    t = np.unique(filled[np.isfinite(filled)])
    fmr = 1.0 - np.searchsorted(imp, t, side="left") / len(imp)
    fnmr = np.searchsorted(gen, t, side="left") / len(gen)
    return t, fmr, fnmr


def _eer(gen: np.ndarray, imp: np.ndarray) -> tuple[float, float]:
    both = np.concatenate([gen, imp])
    t = np.unique(both[np.isfinite(both)])
    gs, is_ = np.sort(gen), np.sort(imp)
    fnmr = np.searchsorted(gs, t, side="left") / len(gs)
    fmr = 1.0 - np.searchsorted(is_, t, side="left") / len(is_)
    i = int(np.argmin(np.abs(fmr - fnmr)))
    return float((fmr[i] + fnmr[i]) / 2), float(t[i])


def plot_det(curves: dict[str, tuple[np.ndarray, np.ndarray]], path: str, title: str = "DET curve") -> None:
    """Save a DET plot (FNMR vs FMR, log axes) of one or more named (scores, same) sets as PNG
    (needs ``facegate[plots]``)."""
    require("plots", "the DET curve")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 5), dpi=110)
    for name, (scores, same) in curves.items():
        _, fmr, fnmr = det_points(scores, same)
        keep = (fmr > 0) & (fnmr > 0)
        ax.plot(fmr[keep], fnmr[keep], label=name)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlim(1e-5, 1)
    ax.set_ylim(1e-3, 1)
    ax.set_xlabel("false match rate (FMR)")
    ax.set_ylabel("false non-match rate (FNMR)")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def read_pairs(path: str) -> list[tuple[str, str, bool]]:
    """A pairs file: tab-separated ``path_a  path_b  same`` (1/0), with or without a header."""
    pairs = []
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            cols = line.rstrip("\n").split("\t")
            if not line.strip() or (n == 1 and cols[-1] not in ("0", "1")):
                continue
            if len(cols) != 3 or cols[2] not in ("0", "1"):
                raise ValueError(f"{path}:{n}: expected 'path_a<TAB>path_b<TAB>0|1'")
            pairs.append((cols[0], cols[1], cols[2] == "1"))
    return pairs


def score_pairs(vectors: dict[str, np.ndarray | None], pairs: list[tuple[str, str, bool]]) -> tuple[np.ndarray, np.ndarray]:
    """Cosine scores (NaN where an image had no template) and same-labels for the pairs."""
    scores = np.full(len(pairs), np.nan)
    for i, (a, b, _) in enumerate(pairs):
        va, vb = vectors.get(a), vectors.get(b)
        if va is not None and vb is not None:
            scores[i] = float(np.dot(va, vb))
    return scores, np.array([s for _, _, s in pairs], dtype=bool)


def all_impostor_pairs(pairs: list[tuple[str, str, bool]]) -> list[tuple[str, str, bool]]:
    """Every cross-identity pair of the images in ``pairs``, identities being the groups that
    genuine pairs connect. Gives far finer FMR resolution than a sampled impostor list; valid
    only when every same-identity pair of images is listed as genuine."""
    group = component_of((x for a, b, _ in pairs for x in (a, b)), ((a, b) for a, b, same in pairs if same))
    images = sorted(group)
    groups = [group[i] for i in images]
    return [
        (images[i], images[j], False)
        for i in range(len(images))
        for j in range(i + 1, len(images))
        if groups[i] != groups[j]
    ]
