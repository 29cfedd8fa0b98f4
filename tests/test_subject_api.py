"""Choosing the face over HTTP: /v1/detect indexes every face and marks the subject, an
``ambiguous_face`` problem lists the candidates, and /v1/verify takes the choice (index or box,
JSON or multipart). The real app with API keys from the gallery's key store."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from facegate.service import Settings, create_app
from test_subject_engine import CENTRE_VS_LARGER_SIDE, TWINS, jpeg, scene


@pytest.fixture(scope="module")
def api(tmp_path_factory, engine):
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("subject-svc"), workers=2, rate_limit_per_s=1000,
                              rate_limit_burst=1000), engine=engine)
    with TestClient(app) as client:
        secret = app.state.service.gallery.keys.create("verifier", ["verify"], None)[1]
        client.headers["Authorization"] = f"Bearer {secret}"
        yield client


@pytest.fixture(scope="module")
def images(engine, photos):
    return {"centre": jpeg(scene(engine, photos, CENTRE_VS_LARGER_SIDE)), "twins": jpeg(scene(engine, photos, TWINS)),
            "biden": photos["biden_1"].read_bytes(), "obama": photos["obama_2"].read_bytes()}


def _problem(r, code: str) -> dict:
    assert r.status_code == 422, r.text
    assert r.headers["content-type"].startswith("application/problem+json")
    body = r.json()
    assert body["code"] == code and body["type"] == f"/problems/{code}"
    return body


def test_detect_indexes_faces_and_marks_the_central_subject(api, images):
    d = api.post("/v1/detect", files={"image": images["centre"]}).json()
    assert d["count"] == 2 and d["reasons"] == []
    assert [f["index"] for f in d["faces"]] == [0, 1]
    central = min(d["faces"], key=lambda f: abs(f["box"][0] + f["box"][2] / 2 - 480))
    assert d["subject"] == central["index"] and central["subject"] is True
    assert [f["subject"] for f in d["faces"]].count(True) == 1
    twins = api.post("/v1/detect", files={"image": images["twins"]}).json()
    assert twins["subject"] is None and twins["reasons"] == ["ambiguous_face"]
    assert not any(f["subject"] for f in twins["faces"])


def test_ambiguous_problem_lists_candidates_and_the_choice_is_accepted(api, images):
    body = _problem(api.post("/v1/verify", data={"purpose": "kyc"},
                             files={"image_a": images["twins"], "image_b": images["obama"]}), "ambiguous_face")
    assert body["image"] == "a"  # which photo to choose a face in
    cands = body["candidates"]
    assert [c["face"] for c in cands] == [0, 1]
    assert all(len(c["box"]) == 4 and len(c["landmarks"]) == 5 and isinstance(c["score"], float) for c in cands)
    obama = min(cands, key=lambda c: c["box"][0])["face"]  # TWINS puts Obama on the left
    r = api.post("/v1/verify", data={"purpose": "kyc", "face_a": str(obama)},
                 files={"image_a": images["twins"], "image_b": images["obama"]})
    assert r.status_code == 200, r.text
    assert r.json()["match"] is True
    assert r.json()["faces"]["image_a"]["box"] == min(cands, key=lambda c: c["box"][0])["box"]


def test_verify_takes_an_index_or_a_box_in_json(api, images):
    a, b = base64.b64encode(images["centre"]).decode(), base64.b64encode(images["biden"]).decode()
    default = api.post("/v1/verify", json={"purpose": "kyc", "image_a": a, "image_b": b}).json()
    assert default["match"] is False  # the subject is the central Obama
    faces = api.post("/v1/detect", json={"image": a}).json()["faces"]
    side = next(f for f in faces if not f["subject"])
    by_index = api.post("/v1/verify", json={"purpose": "kyc", "image_a": a, "image_b": b, "face_a": side["index"]}).json()
    assert by_index["match"] is True and by_index["faces"]["image_a"]["box"] == side["box"]
    x, y, w, h = side["box"]
    by_box = api.post("/v1/verify", json={"purpose": "kyc", "image_a": a, "image_b": b, "box_a": [x - 8, y + 4, w, h]}).json()
    assert by_box["match"] is True and by_box["faces"]["image_a"]["box"] == side["box"]


def test_a_choice_that_names_no_face_is_a_specific_problem(api, images):
    files = {"image_a": images["centre"], "image_b": images["obama"]}
    body = _problem(api.post("/v1/verify", data={"purpose": "kyc", "face_b": "1"}, files=files), "face_index_out_of_range")
    assert body["face"] == 1 and body["faces"] == 1
    body = _problem(api.post("/v1/verify", data={"purpose": "kyc", "box_a": "0,0,10,10"}, files=files), "face_box_not_found")
    assert len(body["candidates"]) == 2
    both = api.post("/v1/verify", data={"purpose": "kyc", "face_a": "0", "box_a": "1,2,3,4"}, files=files)
    assert both.status_code == 422 and both.json()["code"] == "validation_error"
    negative = api.post("/v1/verify", data={"purpose": "kyc", "face_a": "-1"}, files=files)
    assert negative.status_code == 422 and negative.json()["code"] == "validation_error"
    # Against an enrolled subject there is no image_a to choose in.
    probe = api.post("/v1/verify", data={"purpose": "kyc", "collection": "c", "subject": "s", "face_a": "1"},
                     files={"image": images["centre"]})
    assert probe.status_code == 422 and "face_a" in probe.json()["detail"]
