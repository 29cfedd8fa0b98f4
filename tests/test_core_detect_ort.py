"""YuNet in onnxruntime (vision/detect.py) must find what OpenCV's FaceDetectorYN finds on the
same weights: same faces, boxes, landmarks and scores to float rounding — on single portraits,
on a mosaic with faces of several sizes (exercises every stride and the NMS), and on inputs
whose sides are not multiples of 32."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import onnx
import pytest

from facegate.models import YUNET
from facegate.vision import FaceDetector, decode
from facegate.vision.onnx_runtime import fold_dequantize

DATA = Path(__file__).parent / "data"
PHOTOS = sorted(DATA.glob("*.jpg"))


@pytest.fixture(scope="module")
def detector() -> FaceDetector:
    return FaceDetector()


def _opencv(bgr: np.ndarray) -> np.ndarray:
    net = cv2.FaceDetectorYN.create(
        "onnx", np.frombuffer(YUNET.read_verified(), np.uint8), np.empty(0, np.uint8), (320, 320), 0.6, 0.3, 5000
    )
    net.setInputSize((bgr.shape[1], bgr.shape[0]))
    rows = net.detect(bgr)[1]
    return np.zeros((0, 15), np.float32) if rows is None else rows


def _mosaic() -> np.ndarray:
    """Five real portraits at 60–300 px on one grey canvas of 780×530 (not multiples of 32)."""
    canvas = np.full((530, 780, 3), 128, np.uint8)
    x = 5
    for path, size in zip(PHOTOS, (300, 180, 110, 80, 60)):
        img = decode(path)
        h, w = img.shape[:2]
        tile = cv2.resize(img, (size, round(h * size / w)), interpolation=cv2.INTER_AREA)[:520]
        canvas[5 : 5 + tile.shape[0], x : x + size] = tile
        x += size + 5
    return canvas


def _inputs() -> list[np.ndarray]:
    return [decode(p) for p in PHOTOS] + [_mosaic()]


def _sorted(rows: np.ndarray) -> np.ndarray:
    return rows[np.lexsort((rows[:, 1], rows[:, 0]))]


@pytest.mark.parametrize("index", range(len(PHOTOS) + 1))
@pytest.mark.parametrize("pad", [0, 37])
def test_raw_detections_match_opencv(detector: FaceDetector, index: int, pad: int) -> None:
    rgb = _inputs()[index]
    scale = min(1.0, 640 / max(rgb.shape[:2]))
    rgb = cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA) if scale < 1 else rgb
    bgr = cv2.copyMakeBorder(cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), pad, pad, pad, pad, cv2.BORDER_CONSTANT, value=0)
    ref = _opencv(bgr)
    # _run reports coordinates in the unpadded image; OpenCV's are in the padded one.
    offset = np.array([pad, pad, 0, 0] + [pad] * 10 + [0])
    ours = detector._run(rgb, pad, serial=False) + offset
    assert len(ref) >= 1
    assert len(ours) == len(ref)
    np.testing.assert_allclose(_sorted(ours), _sorted(ref.astype(np.float64)), atol=2e-3)


def test_mosaic_finds_every_face_at_every_size(detector: FaceDetector) -> None:
    found = detector.detect(_mosaic())
    assert len(found) == 5
    widths = sorted(d.box[2] for d in found)
    assert widths[-1] > 3 * widths[0]  # faces of very different sizes: several strides at work


def test_serial_and_threaded_sessions_agree(detector: FaceDetector) -> None:
    rgb = _mosaic()
    a, b = detector.detect(rgb), detector.detect(rgb, serial=True)
    assert len(a) == len(b)
    for x, y in zip(a, b):
        np.testing.assert_allclose(x.box, y.box, atol=1e-3)
        np.testing.assert_allclose(x.landmarks, y.landmarks, atol=1e-3)


def test_fold_dequantize_removes_every_dequantize_node() -> None:
    model = onnx.load_from_string(YUNET.read_verified())
    before = sum(n.op_type == "DequantizeLinear" for n in model.graph.node)
    assert before > 0
    assert fold_dequantize(model) == before
    assert not any(n.op_type == "DequantizeLinear" for n in model.graph.node)
    onnx.checker.check_model(model)
