"""The accurate mode: SFace fused with dlib's ResNet (CC0), real models on the public-domain photos."""

from __future__ import annotations

import json
import sys
from itertools import combinations

import numpy as np
import pytest

from cli_support import invoke
from facegate import FaceEngine
from facegate.errors import ModelFileMissingError
from facegate.gallery import ConsentSpec, Gallery
from facegate.gallery.errors import ModelMismatchError
from facegate.models import ACCURATE, DLIB_RESNET, SFACE, embedder_spec, fused_spec

OBAMA = ("obama_1", "obama_2", "obama_3")


@pytest.fixture(scope="module")
def accurate() -> FaceEngine:
    return FaceEngine("accurate")


@pytest.fixture(scope="module")
def templates(accurate, photos) -> dict[str, np.ndarray]:
    return {name: accurate.embed(path).vector for name, path in photos.items()}


@pytest.fixture(autouse=True)
def _no_env_key(monkeypatch):
    monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)
    monkeypatch.delenv("FACEGATE_STORE", raising=False)


def test_registry_entry_licences_and_pinned_files():
    spec = embedder_spec("accurate")
    assert spec is ACCURATE and embedder_spec(ACCURATE.id) is ACCURATE
    assert spec.commercial_use and spec.embedding_dim == 256
    assert spec.parts == (SFACE, DLIB_RESNET) and np.isclose(sum(spec.weights), 1.0)
    for licence in ("Apache-2.0", "CC0", "MIT"):
        assert licence in spec.license
    assert len(DLIB_RESNET.read_verified()) > 20_000_000  # its sha256 matches the installed file
    # the digest a collection pins covers the parts and the fusion weight
    assert fused_spec(spec.id, spec.parts, (0.3, 0.7), spec.flip).sha256 != spec.sha256
    assert fused_spec(spec.id, spec.parts, spec.weights, (False, False)).sha256 != spec.sha256
    assert fused_spec(spec.id, (SFACE, SFACE), spec.weights, spec.flip).sha256 != spec.sha256


def test_same_person_above_and_different_people_below_the_fmr_1e3_threshold(accurate, templates):
    t = accurate.threshold(1e-3)
    for a, b in combinations(OBAMA, 2):
        assert accurate.compare(templates[a], templates[b]) >= t, (a, b)
    for other in ("biden_1", "collins_1"):
        for a in OBAMA:
            assert accurate.compare(templates[a], templates[other]) < t, (a, other)
    assert accurate.compare(templates["biden_1"], templates["collins_1"]) < t


def test_template_is_unit_and_scores_are_the_weighted_sum_of_the_parts(accurate, engine, templates, photos):
    v = accurate.embed(photos["obama_1"])
    assert v.model == ACCURATE.id and v.dim == 256
    assert np.isclose(np.linalg.norm(v.vector), 1.0, atol=1e-5)
    w = ACCURATE.weights[0]
    # the SFace half is the SFace template with flip TTA, scaled
    assert ACCURATE.flip == (True, False)
    for name in ("obama_1", "obama_2"):
        sface_part = templates[name][:128] / np.sqrt(w)
        face = engine.face(photos[name])
        crops = np.stack([face.crop, face.crop[:, ::-1]])
        flipped = engine.embedder.embed(crops).sum(axis=0)
        assert float(sface_part @ flipped) / np.linalg.norm(flipped) > 0.9999
    a, b = templates["obama_1"], templates["obama_2"]
    cos_sface = float(a[:128] @ b[:128]) / w
    cos_dlib = float(a[128:] @ b[128:]) / (1 - w)
    assert np.isclose(np.linalg.norm(a[128:]) ** 2, 1 - w, atol=1e-5)
    assert np.isclose(float(a @ b), w * cos_sface + (1 - w) * cos_dlib, atol=1e-6)
    # batch and single paths give the same templates
    many = accurate.embed_many([photos[n] for n in OBAMA])
    for n, e in zip(OBAMA, many):
        assert float(e.vector @ templates[n]) > 0.9999


def test_dlib_part_agrees_with_dlibs_own_alignment(accurate, templates, photos):
    """The chip warped from YuNet's landmarks gives (nearly) the descriptor that dlib's own
    pipeline (HOG detector, 5-point shape predictor, get_face_chip) gives."""
    import dlib
    import face_recognition_models as frm

    from facegate.vision import decode

    detector = dlib.get_frontal_face_detector()
    shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
    net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())
    w = ACCURATE.weights[0]
    for name in ("obama_1", "biden_1", "collins_1"):
        rgb = decode(photos[name])
        rect = max(detector(rgb, 1), key=lambda r: r.area())  # the subject: the largest face
        own = np.asarray(net.compute_face_descriptor(rgb, shape(rgb, rect)))
        ours = templates[name][128:] / np.sqrt(1 - w)
        assert float(ours @ own) / np.linalg.norm(own) > 0.97, name


def test_collection_pins_the_accurate_model(tmp_path, accurate, engine, photos):
    with Gallery.open(tmp_path / "data", engine=accurate) as g:
        col = g.create_collection("acc", purposes=["access"], model="accurate")
        assert (col.model_id, col.model_sha256, col.embedding_dim) == (ACCURATE.id, ACCURATE.sha256, 256)
        g.enroll("acc", "E1", [photos["obama_1"], photos["obama_2"]], consent=ConsentSpec(["access"], evidence_ref="form-1"))
        g.enroll("acc", "E2", photos["biden_1"], consent=ConsentSpec(["access"], evidence_ref="form-1"))
        res = g.identify("acc", photos["obama_3"], purpose="access")
        assert res.match and [c.subject for c in res.candidates] == ["E1"]
        assert not g.identify("acc", photos["collins_1"], purpose="access").match
    # an SFace engine cannot serve it
    with (
        Gallery.open(tmp_path / "data", engine=engine) as g,
        pytest.raises(ModelMismatchError, match="pinned to model accurate-sface-dlib-v1"),
    ):
        g.identify("acc", photos["obama_3"], purpose="access")


def test_cli_model_accurate(photos):
    res = invoke("verify", "--json", "--model", "accurate", photos["obama_1"], photos["obama_2"])
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["match"] is True and out["model"] == ACCURATE.id


def test_missing_extra_is_a_model_error_naming_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "dlib", None)  # import dlib -> ImportError, as without the extra
    with pytest.raises(ModelFileMissingError, match=r"pip install 'facegate\[accurate\]'"):
        FaceEngine("accurate")
