"""YuNet face detection: RGB image -> raw detections (box, 5 landmarks, score) in image pixels."""

from __future__ import annotations

import threading
from dataclasses import dataclass

import cv2
import numpy as np

from ..models import YUNET, ModelSpec


@dataclass(frozen=True)
class Detection:
    box: np.ndarray  # x, y, w, h
    landmarks: np.ndarray  # (5, 2)
    score: float


class FaceDetector:
    """Thread-safe YuNet wrapper that works on any image size.

    - The image is padded before detection (``pad_ratio`` of its longer side on every edge) so a
      face that fills the frame — a pre-cropped 112×112 face, an ID-photo crop — is still whole
      in the detector's view.
    - It is then scaled so its longer side is ``max_side`` at most (large photos) and
      ``min_side`` at least (tiny crops), and coordinates are mapped back to the source image.
    - cv2's detector keeps per-call state (input size), so each thread gets its own instance.
    """

    def __init__(
        self,
        spec: ModelSpec = YUNET,
        *,
        score_threshold: float = 0.6,
        nms_threshold: float = 0.3,
        max_side: int = 640,
        min_side: int = 320,
        pad_ratio: float = 0.15,
    ) -> None:
        self.spec = spec
        self._buffer = np.frombuffer(spec.read_verified(), dtype=np.uint8)
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_side = max_side
        self.min_side = min_side
        self.pad_ratio = pad_ratio
        self._local = threading.local()
        self._net()  # fail at construction, not on the first request, if OpenCV cannot load it

    def _net(self) -> cv2.FaceDetectorYN:
        net = getattr(self._local, "net", None)
        if net is None:
            net = cv2.FaceDetectorYN.create(
                "onnx", self._buffer, np.empty(0, np.uint8), (320, 320), self.score_threshold, self.nms_threshold, 5000
            )
            self._local.net = net
        return net

    def detect(self, rgb: np.ndarray, *, max_side: int | None = None) -> list[Detection]:
        h, w = rgb.shape[:2]
        long_side = max(h, w) * (1 + 2 * self.pad_ratio)
        limit = max_side or self.max_side
        scale = limit / long_side if long_side > limit else max(1.0, self.min_side / long_side)
        # Resize first, then pad: the same geometry as padding at full size, with fewer pixels
        # to resample for large photos.
        img = rgb
        if scale != 1.0:
            interp = cv2.INTER_AREA if scale < 1 else cv2.INTER_LINEAR
            img = cv2.resize(rgb, (max(1, round(w * scale)), max(1, round(h * scale))), interpolation=interp)
        sx, sy = w / img.shape[1], h / img.shape[0]
        pad = int(round(self.pad_ratio * max(img.shape[:2])))
        bgr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
        if pad:
            bgr = cv2.copyMakeBorder(bgr, pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=(0, 0, 0))
        net = self._net()
        net.setInputSize((bgr.shape[1], bgr.shape[0]))
        _, rows = net.detect(bgr)
        if rows is None:
            return []
        out = []
        for row in rows:
            box = (row[:4].astype(np.float64) - [pad, pad, 0, 0]) * [sx, sy, sx, sy]
            lm = (row[4:14].astype(np.float64).reshape(5, 2) - pad) * [sx, sy]
            # Keep only faces whose centre lies in the real image, clip boxes to it.
            cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
            if not (0 <= cx < w and 0 <= cy < h):
                continue
            x0, y0 = max(box[0], 0.0), max(box[1], 0.0)
            x1, y1 = min(box[0] + box[2], w), min(box[1] + box[3], h)
            out.append(Detection(np.array([x0, y0, x1 - x0, y1 - y0]), lm, float(row[14])))
        return out
