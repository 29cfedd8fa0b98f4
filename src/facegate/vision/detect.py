"""YuNet face detection: RGB image -> raw detections (box, 5 landmarks, score) in image pixels.

YuNet runs in onnxruntime, not through ``cv2.FaceDetectorYN``: with its block-quantised weights
folded to float it costs about half the CPU time of OpenCV's DNN module for the same raw
outputs. The decoding below is OpenCV's own (``modules/objdetect/src/face_detect.cpp``): the
same anchors, clamping, score, box and landmark formulas and the same NMS
(``cv2.dnn.NMSBoxes`` over integer boxes), so detections agree with ``FaceDetectorYN`` to
float rounding (tests/test_core_detect_ort.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import ModelError
from ..models import YUNET, ModelSpec
from .onnx_runtime import SessionPair, fold_dequantize

STRIDES = (8, 16, 32)
TOP_K = 5000


@dataclass(frozen=True)
class Detection:
    box: np.ndarray  # x, y, w, h
    landmarks: np.ndarray  # (5, 2)
    score: float


def _prepare_graph(data: bytes) -> bytes:
    """Fold the quantised weights and free the input's height and width (the graph was exported
    at 640×640, but every reshape in it is size-agnostic)."""
    import onnx  # only where a graph is prepared: a process that never loads a model skips ~1 s of imports

    model = onnx.load_from_string(data)
    fold_dequantize(model)
    inits = {i.name for i in model.graph.initializer}
    inputs = [i for i in model.graph.input if i.name not in inits]
    if len(inputs) != 1:
        raise ModelError(f"expected one image input, found {[i.name for i in inputs]}")
    dims = inputs[0].type.tensor_type.shape.dim
    dims[2].dim_param, dims[3].dim_param = "height", "width"
    for output in model.graph.output:
        output.type.tensor_type.shape.dim[1].dim_param = "anchors"
    del model.graph.value_info[:]  # shapes inferred at 640×640 would contradict other sizes
    serialised: bytes = model.SerializeToString()
    return serialised


class FaceDetector:
    """Thread-safe YuNet detector that works on any image size.

    - The image is padded before detection (``pad_ratio`` of its longer side on every edge) so a
      face that fills the frame — a pre-cropped 112×112 face, an ID-photo crop — is still whole
      in the detector's view.
    - It is then scaled so its longer side is ``max_side`` at most (large photos) and
      ``min_side`` at least (tiny crops), and coordinates are mapped back to the source image.
    - ``detect(..., serial=True)`` runs on the calling thread alone, for worker pools that
      already use one thread per core (as ``FaceEngine.embed_many`` does).
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
        threads: int | None = None,
    ) -> None:
        self.spec = spec
        self.score_threshold = score_threshold
        self.nms_threshold = nms_threshold
        self.max_side = max_side
        self.min_side = min_side
        self.pad_ratio = pad_ratio
        self._sessions = SessionPair(_prepare_graph(spec.read_verified()), threads)
        self.threads = self._sessions.threads
        self._input = self._sessions.threaded.get_inputs()[0].name
        self._outputs = [o.name for o in self._sessions.threaded.get_outputs()]

    def detect(self, rgb: np.ndarray, *, max_side: int | None = None, serial: bool = False) -> list[Detection]:
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
        rows = self._run(img, int(round(self.pad_ratio * max(img.shape[:2]))), serial)
        out = []
        for row in rows:
            box = row[:4] * [sx, sy, sx, sy]
            lm = row[4:14].reshape(5, 2) * [sx, sy]
            # Keep only faces whose centre lies in the real image, clip boxes to it.
            cx, cy = box[0] + box[2] / 2, box[1] + box[3] / 2
            if not (0 <= cx < w and 0 <= cy < h):
                continue
            x0, y0 = max(box[0], 0.0), max(box[1], 0.0)
            x1, y1 = min(box[0] + box[2], w), min(box[1] + box[3], h)
            out.append(Detection(np.array([x0, y0, x1 - x0, y1 - y0]), lm, float(row[14])))
        return out

    def _run(self, img: np.ndarray, pad: int, serial: bool) -> np.ndarray:
        """YuNet on ``img`` with a black border of ``pad`` px -> (N, 15) rows in ``img`` pixels:
        x, y, w, h, 5 landmark (x, y) pairs, score."""
        h, w = img.shape[:2]
        # The network input: BGR planes, 0…255, the border plus bottom/right padding to a
        # multiple of 32 (the coarsest stride), black — built in one buffer.
        th, tw = -(-(h + 2 * pad) // 32) * 32, -(-(w + 2 * pad) // 32) * 32
        x = np.zeros((1, 3, th, tw), np.float32)
        x[0, :, pad : pad + h, pad : pad + w] = img[:, :, ::-1].transpose(2, 0, 1)
        outputs = dict(zip(self._outputs, self._sessions.get(serial).run(None, {self._input: x})))
        rows = np.concatenate([self._decode(outputs, stride, tw // stride) for stride in STRIDES])
        if len(rows) > 1:
            boxes = [[int(v) for v in r[:4]] for r in rows]  # OpenCV's NMS runs on integer boxes
            keep = cv2.dnn.NMSBoxes(boxes, rows[:, 14].tolist(), self.score_threshold, self.nms_threshold, top_k=TOP_K)
            rows = rows[np.asarray(keep, dtype=int).reshape(-1)]
        rows = rows.astype(np.float64)
        rows[:, :2] -= pad
        rows[:, 4:14] -= pad
        return rows

    def _decode(self, outputs: dict[str, np.ndarray], stride: int, cols: int) -> np.ndarray:
        cls = np.clip(outputs[f"cls_{stride}"][0, :, 0], 0.0, 1.0)
        obj = np.clip(outputs[f"obj_{stride}"][0, :, 0], 0.0, 1.0)
        score = np.sqrt(cls * obj)
        idx = np.flatnonzero(score >= self.score_threshold)
        col = (idx % cols).astype(np.float32)[:, None]
        row = (idx // cols).astype(np.float32)[:, None]
        bbox = outputs[f"bbox_{stride}"][0, idx]
        kps = outputs[f"kps_{stride}"][0, idx].reshape(-1, 5, 2)
        centre = (np.hstack([col, row]) + bbox[:, :2]) * stride
        size = np.exp(bbox[:, 2:]) * stride
        marks = (kps + np.stack([col, row], axis=-1)) * stride
        return np.column_stack([centre - size / 2, size, marks.reshape(-1, 10), score[idx]]).astype(np.float32)
