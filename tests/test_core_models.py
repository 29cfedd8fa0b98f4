"""Model files are verified before use; metrics are computed correctly."""

from __future__ import annotations

import dataclasses

import cv2
import numpy as np
import pytest

from facegate.errors import ModelFileMissingError, ModelIntegrityError, UnknownModelError
from facegate.evaluation import all_impostor_pairs, evaluate, threshold_at_fmr
from facegate.models import SFACE, YUNET, embedder_spec
from facegate.vision import ARCFACE_TEMPLATE, Embedder, FaceDetector, align


def test_pinned_hashes_match_installed_files():
    assert len(SFACE.read_verified()) > 1_000_000
    assert len(YUNET.read_verified()) > 100_000


def test_tampered_model_is_refused(tmp_path, monkeypatch):
    bad = tmp_path / "sface.onnx"
    data = bytearray(SFACE.path().read_bytes())
    data[-100] ^= 0xFF
    bad.write_bytes(bytes(data))
    tampered = dataclasses.replace(SFACE)
    monkeypatch.setattr(type(tampered), "path", lambda self: bad)
    with pytest.raises(ModelIntegrityError, match="sha256"):
        Embedder(tampered)


def test_missing_package_or_file():
    with pytest.raises(ModelFileMissingError, match="pip install"):
        dataclasses.replace(YUNET, package="no_such_pkg_facegate").path()
    with pytest.raises(ModelFileMissingError, match="not found"):
        FaceDetector(dataclasses.replace(YUNET, resource="models/missing.onnx"))


def test_unknown_model():
    with pytest.raises(UnknownModelError, match="known: sface"):
        embedder_spec("resnet-9000")


def test_threshold_and_tar_at_fmr():
    rng = np.random.default_rng(1)
    imp = rng.normal(0, 0.1, 100_000)
    gen = rng.normal(0.6, 0.1, 1000)
    t = threshold_at_fmr(imp, 1e-3)
    assert (imp >= t).mean() <= 1e-3 and (imp >= np.nextafter(t, -1) - 1e-3).mean() > 5e-4
    scores = np.concatenate([gen, imp])
    same = np.r_[np.ones(1000, bool), np.zeros(100_000, bool)]
    rep = evaluate(scores, same)
    assert 0.97 < rep.tar_at_fmr[1e-3] < 1.0
    assert 0.0 < rep.eer < 0.02


def test_fta_counts_as_rejection():
    scores = np.array([0.9, np.nan, 0.1, np.nan])
    same = np.array([True, True, False, False])
    rep = evaluate(scores, same)
    assert rep.fta_pairs == 2 and rep.fta_rate == 0.5
    assert rep.tar_at_fmr[1e-3] == 0.5  # the lost genuine pair is a false non-match


def test_all_impostor_pairs_from_genuine_groups():
    pairs = [("a1", "a2", True), ("b1", "b2", True), ("a1", "b1", False), ("c", "a1", False)]
    imp = all_impostor_pairs(pairs)
    assert len(imp) == 8  # a{1,2} x b{1,2} = 4, c x {a1,a2,b1,b2} = 4
    assert all(not same for *_, same in imp)


def _mapped_landmarks(lm: np.ndarray, estimator: str) -> np.ndarray:
    """Where align() takes the template points from: the crop of an image whose pixels hold
    their own (x, y) coordinates (bilinear warping reproduces a linear image exactly)."""
    h = w = 400
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    coords = np.dstack([xs, ys, np.zeros_like(xs)])
    crop = align(coords, lm, estimator=estimator)
    # the crop-to-image affine map from three crop pixels, applied to the template points
    src = np.array([[0, 0], [100, 0], [0, 100]], np.float32)
    dst = np.array([crop[int(v), int(u), :2] for u, v in src], np.float32)
    m = cv2.getAffineTransform(src, dst)
    return np.c_[ARCFACE_TEMPLATE, np.ones(5)] @ m.T


@pytest.mark.parametrize("estimator", ["lmeds", "umeyama"])
def test_alignment_puts_the_landmarks_on_the_template(estimator):
    angle, scale = np.deg2rad(12), 2.3
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    lm = ARCFACE_TEMPLATE @ rot.T + [60.0, 45.0]
    assert np.abs(_mapped_landmarks(lm, estimator) - lm).max() < 0.05


def test_lmeds_alignment_ignores_one_stray_landmark_least_squares_does_not():
    lm = ARCFACE_TEMPLATE * 2.0 + [80.0, 60.0]
    stray = lm.copy()
    stray[2] += [18.0, 0.0]  # the nose tip misplaced
    eyes_mouth = [0, 1, 3, 4]
    lmeds = _mapped_landmarks(stray, "lmeds")
    umeyama = _mapped_landmarks(stray, "umeyama")
    assert np.abs(lmeds[eyes_mouth] - lm[eyes_mouth]).max() < 0.1
    assert np.abs(umeyama[eyes_mouth] - lm[eyes_mouth]).max() > 2.0
