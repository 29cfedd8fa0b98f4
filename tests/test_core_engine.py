"""FaceEngine on real photos: detection across sizes, subject choice, quality, verify, threads."""

from __future__ import annotations

import warnings
from concurrent.futures import ThreadPoolExecutor

import cv2
import numpy as np
import pytest

from facegate import FaceEngine, NonCommercialModelWarning
from facegate.errors import AmbiguousFaceError, CalibrationError, LicenseNotAcceptedError, NoFaceError
from facegate.vision import decode


@pytest.fixture(scope="module")
def rgb(photos):
    return {name: decode(path) for name, path in photos.items()}


def test_detects_one_face_with_landmarks_inside_box(engine, photos):
    faces = engine.detect(photos["obama_1"])
    assert len(faces) == 1
    f = faces[0]
    x, y, w, h = f.box
    assert f.score > 0.8 and w > 100 and h > 100
    for lx, ly in f.landmarks:
        assert x <= lx <= x + w and y <= ly <= y + h
    (rex, rey), (lex, ley) = f.landmarks[:2]
    assert rex < lex  # image-left eye first
    assert f.quality.inter_eye_px == pytest.approx(np.hypot(lex - rex, ley - rey))


def test_genuine_and_impostor_decisions(engine, photos):
    genuine = engine.verify(photos["obama_1"], photos["obama_2"])
    impostor = engine.verify(photos["obama_1"], photos["biden_1"])
    assert genuine.match and genuine.score > genuine.threshold
    assert not impostor.match and impostor.score < impostor.threshold
    assert genuine.fmr == 1e-4
    assert genuine.threshold == engine.threshold(1e-4)


def test_thresholds_ordered_by_fmr(engine):
    assert engine.threshold(1e-3) < engine.threshold(1e-4) <= engine.threshold(1e-5)
    cal = engine.calibration
    assert cal.genuine_pairs > 1000 and cal.impostor_pairs > 50_000 and cal.date


def test_uncalibrated_fmr_is_refused(engine, photos):
    with pytest.raises(CalibrationError, match="choose one of 0.001, 0.0001, 1e-05"):
        engine.verify(photos["obama_1"], photos["obama_2"], fmr=0.05)


def test_embedding_is_unit_length_and_deterministic(engine, photos):
    a = engine.embed(photos["obama_3"])
    b = engine.embed(photos["obama_3"].read_bytes())
    assert a.dim == 128 and a.model == engine.model_id
    assert np.linalg.norm(a.vector) == pytest.approx(1.0, abs=1e-5)
    assert engine.compare(a, b) > 0.9999


def test_tight_112_crop_is_found(engine, rgb, photos):
    """A pre-aligned 112x112 face (fills the frame) is found thanks to padding."""
    crop = engine.face(photos["obama_1"]).crop
    assert crop.shape == (112, 112, 3)
    face = engine.face(crop)
    assert face.box[2] > 60
    assert engine.compare(engine.embed(crop), engine.embed(photos["obama_2"])) > engine.threshold(1e-4)


def test_tiny_64px_image(engine, rgb):
    h, w = rgb["obama_1"].shape[:2]
    small = cv2.resize(rgb["obama_1"], (64, int(64 * h / w)), interpolation=cv2.INTER_AREA)
    faces = engine.detect(small)
    assert len(faces) == 1


def test_huge_8000px_image_maps_coordinates_back(engine, rgb):
    """An 8000x4500 (36 MP) photo: detection runs downscaled, boxes come back in full-size pixels."""
    base = rgb["obama_2"]
    factor = 4500 / base.shape[0]
    scaled = cv2.resize(base, (int(base.shape[1] * factor), 4500), interpolation=cv2.INTER_LINEAR)
    big = np.full((4500, 8000, 3), 90, np.uint8)
    offset = 2800
    big[:, offset : offset + scaled.shape[1]] = scaled
    small_face = engine.face(base)
    big_face = engine.face(big)
    x, y, bw, bh = small_face.box
    expected = (x * factor + offset, y * factor, bw * factor, bh * factor)
    for got, want in zip(big_face.box, expected):
        assert got == pytest.approx(want, rel=0.08, abs=60)
    assert engine.compare(engine.embed(big), engine.embed(base)) > 0.9


def test_group_photo_finds_small_faces(engine, rgb):
    """Five faces ~90 px wide on a 2400x1600 canvas: all are found, none is 'the subject'."""
    canvas = np.full((1600, 2400, 3), 200, np.uint8)
    names = ["obama_1", "obama_2", "biden_1", "collins_1", "obama_3"]
    for i, name in enumerate(names):
        face = engine.face(rgb[name])
        x, y, w, h = (int(v) for v in face.box)
        pad = int(0.4 * w)
        img = rgb[name]
        y0, y1, x0, x1 = max(y - pad, 0), min(y + h + pad, img.shape[0]), max(x - pad, 0), min(x + w + pad, img.shape[1])
        patch = cv2.resize(img[y0:y1, x0:x1], (150, int(150 * (y1 - y0) / (x1 - x0))), interpolation=cv2.INTER_AREA)
        cx, cy = 200 + i * 440, 700
        canvas[cy : cy + patch.shape[0], cx : cx + patch.shape[1]] = patch
    faces = engine.detect(canvas)
    assert len(faces) == 5
    with pytest.raises(AmbiguousFaceError) as exc:
        engine.face(canvas)
    assert [c["face"] for c in exc.value.details["candidates"]] == [0, 1, 2, 3, 4]


def test_subject_is_most_prominent_face(engine, rgb):
    """A big central face and a small one in the corner: the big one is the subject."""
    main = rgb["obama_1"]
    h, w = main.shape[:2]
    canvas = main.copy()
    other = cv2.resize(rgb["biden_1"], (w // 5, int(rgb["biden_1"].shape[0] * (w // 5) / rgb["biden_1"].shape[1])))
    canvas[h - other.shape[0] :, w - other.shape[1] :] = other
    faces = engine.detect(canvas)
    assert len(faces) == 2
    subject = engine.face(canvas)
    assert subject.box == faces[0].box
    assert engine.compare(engine.embed(canvas), engine.embed(main)) > 0.95


def test_two_equal_faces_are_ambiguous(engine, rgb):
    a = cv2.resize(rgb["obama_1"], (500, 600))
    b = cv2.resize(rgb["biden_1"], (500, 600))
    with pytest.raises(AmbiguousFaceError, match="equally"):
        engine.face(np.hstack([a, b]))


def test_no_face(engine):
    noise = np.random.default_rng(0).integers(0, 255, (300, 300, 3), dtype=np.uint8)
    with pytest.raises(NoFaceError):
        engine.embed(noise)
    assert engine.detect(np.full((200, 200, 3), 128, np.uint8)) == []


def test_quality_reflects_blur_size_and_pose(engine, rgb):
    sharp = engine.face(rgb["obama_1"]).quality
    blurred = engine.face(cv2.GaussianBlur(rgb["obama_1"], (0, 0), 6)).quality
    assert blurred.sharpness < sharp.sharpness / 3
    half = cv2.resize(rgb["obama_1"], None, fx=0.5, fy=0.5, interpolation=cv2.INTER_AREA)
    assert engine.face(half).quality.inter_eye_px == pytest.approx(sharp.inter_eye_px / 2, rel=0.1)
    assert abs(sharp.yaw_deg) < 15 and abs(sharp.roll_deg) < 10
    # Rotating the photo counter-clockwise shows up as negative roll. YuNet's landmarks
    # under-read in-plane rotation (about half of it at 20-30 degrees), so only the sign and a
    # clear change are asserted.
    h, w = rgb["obama_1"].shape[:2]
    rot = cv2.warpAffine(rgb["obama_1"], cv2.getRotationMatrix2D((w / 2, h / 2), 20, 1.0), (w, h))
    assert engine.face(rot).quality.roll_deg < sharp.roll_deg - 3
    dark = engine.face((rgb["obama_1"] * 0.2).astype(np.uint8)).quality
    assert dark.brightness < sharp.brightness / 3


def test_mirrored_photo_flips_yaw_sign(engine, rgb):
    turned = rgb["biden_1"]
    q = engine.face(turned).quality
    q_mirror = engine.face(np.ascontiguousarray(turned[:, ::-1])).quality
    assert q.yaw_deg * q_mirror.yaw_deg <= 0 or abs(q.yaw_deg) < 3


def test_concurrent_calls_match_sequential(engine, photos):
    pairs = [(photos["obama_1"], photos["obama_2"]), (photos["obama_1"], photos["biden_1"]),
             (photos["collins_1"], photos["obama_3"]), (photos["obama_2"], photos["obama_3"])] * 3
    sequential = [engine.verify(a, b).score for a, b in pairs]
    with ThreadPoolExecutor(6) as pool:
        concurrent = list(pool.map(lambda ab: engine.verify(*ab).score, pairs))
    assert np.allclose(sequential, concurrent, atol=1e-5)


def test_embed_many_keeps_order_and_errors(engine, photos):
    out = engine.embed_many([photos["obama_1"], b"not an image", photos["biden_1"]])
    assert out[0].model == engine.model_id
    assert getattr(out[1], "code", None) == "not_an_image"
    assert engine.compare(out[2], engine.embed(photos["biden_1"])) > 0.9999


def test_noncommercial_model_needs_opt_in():
    with pytest.raises(LicenseNotAcceptedError, match="NON-COMMERCIAL"):
        FaceEngine("arcface-mbf")


def test_noncommercial_model_warns_and_works(photos):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        arc = FaceEngine("arcface-mbf", allow_noncommercial=True)
    assert any(issubclass(w.category, NonCommercialModelWarning) for w in caught)
    assert arc.embed(photos["obama_1"]).dim == 512
    assert arc.verify(photos["obama_1"], photos["obama_2"]).match
    assert not arc.verify(photos["obama_1"], photos["biden_1"]).match
