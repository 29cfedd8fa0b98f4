"""FaceEngine: the library's front door — detect, face, embed, verify.

    >>> engine = FaceEngine()
    >>> result = engine.verify("selfie.jpg", "id_photo.jpg", fmr=1e-4)
    >>> result.match, result.score, result.threshold
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np

from .calibration import DEFAULT_FMR, Calibration, calibration_for
from .errors import FaceError, FacegateError, InvalidInputError, TooManyFacesError
from .models import DEFAULT_EMBEDDER, YUNET, embedder_spec
from .results import Embedding, Face, VerifyResult
from .vision import DEFAULT_MAX_PIXELS, FaceDetector, ImageInput, align, assess, decode
from .vision.embed import with_flip
from .vision.fused import build_embedder
from .vision.subject import DEFAULT_RULE, FaceRef, SubjectRule, choose_subject, pick_face, prominence

BATCH_SIZE = 16


@dataclass(frozen=True)
class Chosen:
    """An image together with the face meant in it: ``face`` is an index into :meth:`FaceEngine.detect`'s
    order or a box (x, y, w, h; the detected face overlapping it most is taken). Accepted wherever
    the engine takes an image, e.g. ``engine.verify(Chosen("group.jpg", 1), "id.jpg")``."""

    image: ImageInput
    face: FaceRef


class FaceEngine:
    """Thread-safe; create one per process and share it.

    ``model`` is ``"sface"`` (default, Apache-2.0), ``"accurate"`` (SFace fused with dlib's
    ResNet, CC0; needs the ``facegate[accurate]`` extra, ~4x the CPU per face) or
    ``"arcface-mbf"`` (InsightFace weights, non-commercial research only: requires
    ``allow_noncommercial=True`` and warns).
    """

    def __init__(
        self,
        model: str = DEFAULT_EMBEDDER,
        *,
        allow_noncommercial: bool = False,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        max_faces: int = 100,
        detector_max_side: int = 640,
        flip_tta: bool = False,
        threads: int | None = None,
    ) -> None:
        self.spec = embedder_spec(model, allow_noncommercial=allow_noncommercial)
        self.max_pixels = max_pixels
        self.max_faces = max_faces
        self.detector = FaceDetector(YUNET, max_side=detector_max_side)
        self.embedder = build_embedder(self.spec, threads=threads)
        self.flip_tta = flip_tta
        self._workers = threads or min(4, os.cpu_count() or 1)

    @property
    def model_id(self) -> str:
        return self.spec.id

    @property
    def calibration(self) -> Calibration:
        return calibration_for(self.spec.id)

    def threshold(self, fmr: float = DEFAULT_FMR) -> float:
        return self.calibration.threshold(fmr)

    # --- detection ----------------------------------------------------------------------------

    def detect(self, image: ImageInput) -> list[Face]:
        """All faces, most prominent first, each with landmarks and quality. A face's index in
        this list is what ``face=`` / :class:`Chosen` take."""
        return self._faces(decode(image, max_pixels=self.max_pixels))

    def detect_subject(self, image: ImageInput, rule: SubjectRule = DEFAULT_RULE) -> tuple[list[Face], Face | FaceError]:
        """:meth:`detect`'s faces and, from the same pass, the subject under ``rule`` — or the
        NoFaceError / AmbiguousFaceError that choosing it raised (e.g. a stricter enrolment
        ``rule`` with a ``margin``)."""
        rgb = decode(image, max_pixels=self.max_pixels)
        faces = self._faces(rgb)
        try:
            return faces, choose_subject(faces, (rgb.shape[1], rgb.shape[0]), rule)
        except FaceError as exc:
            return faces, exc

    def face(self, image: ImageInput | Chosen, face: FaceRef | None = None) -> Face:
        """The subject's face (vision/subject.py: central and clearly the most prominent), or
        the face chosen by ``face`` (an index into :meth:`detect`'s order, or a box).

        Raises NoFaceError when there is none and AmbiguousFaceError (listing every face as a
        candidate) when no face is clearly the subject, rather than guessing which person is
        meant; FaceIndexError / FaceBoxNotFoundError when ``face`` names no detected face.
        """
        return self._face(image, face)

    def _face_of(self, image: ImageInput | Chosen, face: FaceRef | None, which: str) -> Face:
        try:
            return self._face(image, face)
        except FaceError as exc:
            exc.details["image"] = which  # so a caller can ask about the right image
            raise

    def _face(self, image: ImageInput | Chosen, face: FaceRef | None = None, *, serial: bool = False) -> Face:
        if isinstance(image, Chosen):  # an explicit ``face`` overrides the one attached
            if face is None:
                face = image.face
            image = image.image
        rgb = decode(image, max_pixels=self.max_pixels)
        faces = self._faces(rgb, serial=serial)
        if face is not None:
            return pick_face(faces, face)
        return choose_subject(faces, (rgb.shape[1], rgb.shape[0]))

    def _faces(self, rgb: np.ndarray, *, serial: bool = False) -> list[Face]:
        h, w = rgb.shape[:2]
        detections = self.detector.detect(rgb, serial=serial)
        if len(detections) > self.max_faces:
            raise TooManyFacesError(
                f"{len(detections)} faces found, more than the limit of {self.max_faces}",
                faces=len(detections),
                limit=self.max_faces,
            )
        faces = []
        for d in detections:
            crop = align(rgb, d.landmarks)
            x, y, bw, bh = (float(v) for v in d.box)
            box = (x, y, bw, bh)
            faces.append(
                Face(
                    box=box,
                    landmarks=tuple((float(x), float(y)) for x, y in d.landmarks),
                    score=d.score,
                    quality=assess(d.landmarks, crop, d.score),
                    prominence=prominence(box, d.score, (w, h)),
                    crop=crop,
                )
            )
        faces.sort(key=lambda f: f.prominence, reverse=True)
        return faces

    # --- embedding ----------------------------------------------------------------------------

    def embed(self, image: ImageInput | Chosen, face: FaceRef | None = None) -> Embedding:
        """The template of the subject face (or of the face chosen by ``face``, as in :meth:`face`)."""
        chosen = self.face(image, face)
        return Embedding(self.embed_crops(_crop(chosen)[None])[0], self.spec.id, chosen)

    def embed_faces(self, faces: Sequence[Face]) -> list[Embedding]:
        """Templates for faces already detected (e.g. every face of ``detect``), in batches."""
        out: list[Embedding] = []
        for start in range(0, len(faces), BATCH_SIZE):
            chunk = faces[start : start + BATCH_SIZE]
            vectors = self.embed_crops(np.stack([_crop(f) for f in chunk]))
            out.extend(Embedding(v, self.spec.id, f) for v, f in zip(vectors, chunk))
        return out

    def embed_many(self, images: Iterable[ImageInput | Chosen], *, chunk: int | None = None) -> list[Embedding | FacegateError]:
        """Subject templates for many images, in input order (a :class:`Chosen` image gives its
        chosen face's). A failing image yields its error in place; the others still succeed.

        One worker per core runs the whole pipeline for ``chunk`` consecutive images at a time
        (decode, detect, align, then one embedding call for the chunk's faces) on its own
        thread, with single-threaded detection and embedding sessions: the cores never wait on each other,
        and one worker's detection overlaps the other's embedding. Templates are the same as
        :meth:`embed` gives (up to float rounding). The workers live as long as the engine.

        ``chunk`` defaults to two embedding rows per call (1 image with flip TTA, else 2):
        measured on SFace, CPU time per face rises with larger batches (~4 % at 4 rows, ~10 % at
        8) because the activations stop fitting in cache.
        """
        items = list(images)
        workers = max(1, min(self._workers, len(items)))
        spec_id = self.spec.id

        def subject(image: ImageInput | Chosen, serial: bool = False) -> Face | FacegateError:
            try:
                return self._face(image, serial=serial)
            except FacegateError as exc:
                return exc

        if workers == 1:  # one image or one core: the multi-threaded session is fastest
            found = [subject(image) for image in items]
            ok = [f for f in found if isinstance(f, Face)]
            embedded = iter(self.embed_faces(ok))
            return [next(embedded) if isinstance(f, Face) else f for f in found]

        def run(part: Sequence[ImageInput | Chosen]) -> list[Embedding | FacegateError]:
            found = [subject(image, serial=True) for image in part]
            faces = [f for f in found if isinstance(f, Face)]
            vectors = iter(self.embed_crops(np.stack([_crop(f) for f in faces]), serial=True) if faces else ())
            return [Embedding(next(vectors), spec_id, f) if isinstance(f, Face) else f for f in found]

        # Workers persist per engine and process: after a fork (pre-forking servers) the
        # parent's threads do not exist in the child, so a child builds its own pool.
        state = self.__dict__.get("_embed_pool")
        if state is None or state[0] != os.getpid():
            import weakref

            created = (os.getpid(), ThreadPoolExecutor(self._workers, thread_name_prefix="facegate-embed"))
            if state is None:  # dict.setdefault is atomic; a losing executor never started a thread
                state = self.__dict__.setdefault("_embed_pool", created)
            else:
                self.__dict__["_embed_pool"] = state = created
            if state is created:  # let the idle workers go when the engine does
                weakref.finalize(self, created[1].shutdown, wait=False)
        pool = state[1]
        if chunk is None:
            chunk = 1 if getattr(self, "flip_tta", False) else 2
        size = max(1, min(chunk, math.ceil(len(items) / workers)))
        parts = [items[i : i + size] for i in range(0, len(items), size)]
        return [result for done in pool.map(run, parts) for result in done]

    def embed_crops(self, crops: np.ndarray, *, serial: bool = False) -> np.ndarray:
        """(N, 112, 112, 3) aligned RGB crops -> (N, dim) unit templates.

        With ``flip_tta`` each crop is embedded together with its mirror image and the two
        vectors are summed (:func:`facegate.vision.embed.with_flip`). Identity-disjoint
        cross-validation on the dev set favours it on both halves (TAR@FMR1e-3 +0.5 point,
        bench/cv.py), but it doubles the embedding cost, so it is off by default; templates of
        the two modes still compare (cosine ≈ 0.98) but a collection should stick to one, and
        thresholds are calibrated without it.
        ``serial`` uses the single-threaded session (for callers that parallelise across
        images themselves).
        """
        run = self.embedder.embed_serial if serial else self.embedder.embed
        return with_flip(run, crops) if self.flip_tta else run(crops)

    # --- comparison ---------------------------------------------------------------------------

    def compare(self, a: Embedding | np.ndarray, b: Embedding | np.ndarray) -> float:
        """Cosine similarity of two templates of the same model (−1…1)."""
        if isinstance(a, Embedding) and isinstance(b, Embedding) and a.model != b.model:
            raise ValueError(f"templates of different models cannot be compared ({a.model} vs {b.model})")
        va = a.vector if isinstance(a, Embedding) else np.asarray(a, np.float32)
        vb = b.vector if isinstance(b, Embedding) else np.asarray(b, np.float32)
        return float(np.dot(va, vb) / max(np.linalg.norm(va) * np.linalg.norm(vb), 1e-12))

    def verify(
        self, a: ImageInput | Chosen, b: ImageInput | Chosen, fmr: float = DEFAULT_FMR, *,
        face_a: FaceRef | None = None, face_b: FaceRef | None = None,
    ) -> VerifyResult:
        """Is the subject of ``a`` the same person as the subject of ``b``? ``face_a`` / ``face_b``
        choose the face meant in a multi-face image, as in :meth:`face`. A face error says which
        image it is about in ``details["image"]`` (``"a"`` or ``"b"``)."""
        threshold = self.threshold(fmr)
        fa, fb = self._face_of(a, face_a, "a"), self._face_of(b, face_b, "b")
        va, vb = self.embed_crops(np.stack([_crop(fa), _crop(fb)]))
        score = float(np.dot(va, vb))
        return VerifyResult(score >= threshold, score, threshold, fmr, self.spec.id, fa, fb)


def _crop(face: Face) -> np.ndarray:
    """The aligned crop a face from this engine carries (a Face rebuilt from its dict has none)."""
    if face.crop is None:
        raise InvalidInputError("this Face has no aligned crop: take faces from FaceEngine.detect or FaceEngine.face")
    return face.crop
