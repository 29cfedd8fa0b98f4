"""Choosing the face on the gallery routes over HTTP: identify (``face``/``box``) and enrolment
(``faces``, one entry per image), multipart and JSON, and through the typed client. The real app
with API keys from the gallery's key store; two-face composites of the public-domain fixtures."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from facegate import Chosen
from facegate.client import Client
from facegate.gallery import ConsentSpec, QualityPolicy
from facegate.service import Settings, create_app
from test_subject_engine import TWINS, jpeg, scene

COL = "/v1/collections/kyc"


@pytest.fixture(scope="module")
def api(tmp_path_factory, engine, photos):
    app = create_app(Settings(data_dir=tmp_path_factory.mktemp("choice-svc"), workers=2, rate_limit_per_s=1000,
                              rate_limit_burst=1000), engine=engine)
    with TestClient(app) as client:
        secret = app.state.service.gallery.keys.create("operator", ["enroll", "identify", "verify"], None)[1]
        admin = app.state.service.gallery.keys.create("root", ["admin"], None)[1]
        client.post("/v1/collections", json={"name": "kyc", "purposes": ["kyc"]},
                    headers={"Authorization": f"Bearer {admin}"}).raise_for_status()
        client.headers["Authorization"] = f"Bearer {secret}"
        r = client.post(f"{COL}/subjects/obama/faces", data={"purposes": "kyc"}, files={"images": photos["obama_2"].read_bytes()})
        assert r.status_code == 201 and r.json()["accepted"] == 1, r.text
        yield client


@pytest.fixture(scope="module")
def twins(engine, photos) -> bytes:
    return jpeg(scene(engine, photos, TWINS))  # Obama on the left, Biden on the right


@pytest.fixture(scope="module")
def sides(api, twins) -> dict[str, dict]:
    faces = api.post("/v1/detect", files={"image": twins}, data={"collection": "kyc"}).json()["faces"]
    left, right = sorted(faces, key=lambda f: f["box"][0])
    return {"obama": left, "biden": right}


def test_enrol_refuses_an_ambiguous_photo_and_takes_the_face_chosen(api, twins, sides, photos):
    plain = api.post(f"{COL}/subjects/biden/faces", data={"purposes": "kyc"}, files={"images": twins}).json()
    assert plain["accepted"] == 0 and plain["images"][0]["reason"] == "ambiguous_face"
    # multipart: one entry per image, "null" where the subject rule decides
    r = api.post(f"{COL}/subjects/biden/faces", data={"purposes": "kyc", "faces": f"{sides['biden']['index']}"},
                 files={"images": twins})
    assert r.status_code in (200, 201), r.text
    out = r.json()
    assert out["accepted"] == 1 and out["images"][0]["face"]["box"] == sides["biden"]["box"]
    # the template is Biden's: his own portrait now identifies him
    probe = api.post(f"{COL}/identify", data={"purpose": "kyc"}, files={"image": photos["biden_1"].read_bytes()}).json()
    assert [c["subject"] for c in probe["candidates"]] == ["biden"]


def test_enrol_faces_align_with_images_in_json(api, twins, sides, photos):
    imgs = [base64.b64encode(twins).decode(), base64.b64encode(photos["obama_3"].read_bytes()).decode()]
    r = api.post(f"{COL}/subjects/obama/faces", json={"images": imgs, "faces": [sides["obama"]["index"], None]})
    assert r.status_code == 200, r.text
    got = r.json()["images"]
    assert got[0]["accepted"] is True and got[0]["face"]["box"] == sides["obama"]["box"]
    assert got[1]["accepted"] is True
    # Biden's face chosen for Obama's subject does not match his enrolled faces
    wrong = api.post(f"{COL}/subjects/obama/faces", json={"images": imgs[:1], "faces": [sides["biden"]["index"]]}).json()
    assert wrong["accepted"] == 0 and wrong["images"][0]["reason"] == "face_mismatch"


def test_enrol_choice_errors(api, twins):
    img = base64.b64encode(twins).decode()
    short = api.post(f"{COL}/subjects/x1/faces", json={"images": [img, img], "faces": [0], "purposes": ["kyc"]})
    assert short.status_code == 422 and "one per image" in short.json()["detail"]
    live = api.post(f"{COL}/subjects/x1/faces", json={"liveness_session": "s1", "faces": [0], "purposes": ["kyc"]})
    assert live.status_code == 422 and "liveness" in live.json()["detail"]
    negative = api.post(f"{COL}/subjects/x1/faces", json={"images": [img], "faces": [-1], "purposes": ["kyc"]})
    assert negative.status_code == 422 and negative.json()["code"] == "validation_error"
    # an index that names no face is that image's rejection reason
    out = api.post(f"{COL}/subjects/x1/faces", json={"images": [img], "faces": [5], "purposes": ["kyc"]}).json()
    assert out["accepted"] == 0 and out["images"][0]["reason"] == "face_index_out_of_range"


def test_identify_ambiguous_lists_candidates_and_takes_the_choice(api, twins, sides):
    r = api.post(f"{COL}/identify", data={"purpose": "kyc"}, files={"image": twins})
    assert r.status_code == 422 and r.json()["code"] == "ambiguous_face"
    assert sorted(c["face"] for c in r.json()["candidates"]) == [0, 1]
    for who in ("obama", "biden"):
        out = api.post(f"{COL}/identify", data={"purpose": "kyc", "face": str(sides[who]["index"])}, files={"image": twins})
        assert out.status_code == 200, out.text
        assert out.json()["candidates"][0]["subject"] == who and out.json()["face"]["box"] == sides[who]["box"]
    x, y, w, h = sides["biden"]["box"]
    by_box = api.post(f"{COL}/identify", json={"purpose": "kyc", "image": base64.b64encode(twins).decode(),
                                               "box": [x + 5, y - 3, w, h]}).json()
    assert by_box["candidates"][0]["subject"] == "biden"
    both = api.post(f"{COL}/identify", json={"purpose": "kyc", "image": base64.b64encode(twins).decode(), "face": 0,
                                             "box": [x, y, w, h]})
    assert both.status_code == 422 and both.json()["code"] == "validation_error"
    live = api.post(f"{COL}/identify", json={"purpose": "kyc", "liveness_session": "s1", "face": 0})
    assert live.status_code == 422 and "liveness" in live.json()["detail"]


def test_typed_client_sends_the_choice(api, twins, sides, photos):
    client = Client(http=api)
    assert client.identify("kyc", twins, purpose="kyc", face=sides["biden"]["index"]).candidates[0].subject == "biden"
    assert client.identify("kyc", twins, purpose="kyc", face=sides["obama"]["box"]).candidates[0].subject == "obama"
    out = client.enroll("kyc", "obama", [photos["obama_1"], twins], faces=[None, sides["obama"]["index"]])
    assert [i.reason for i in out.images] in ([None, None], [None, "duplicate_image"])
    assert out.images[1].face is not None and out.images[1].face["box"] == sides["obama"]["box"]
    pair = client.verify(twins, photos["biden_1"], purpose="kyc", face_a=sides["biden"]["index"])
    assert pair.match is True
    pair = client.verify(twins, photos["biden_1"], purpose="kyc", face_a=sides["obama"]["box"])
    assert pair.match is False


def test_a_chosen_face_still_passes_the_quality_gate(api, twins, sides):
    g = api.app.state.service.gallery
    g.create_collection("strict", purposes=("kyc",), model=g.get_collection("kyc").model_id,
                        quality_policy=QualityPolicy(min_inter_eye_px=500))
    out = api.post("/v1/collections/strict/subjects/s1/faces", data={"purposes": "kyc", "faces": str(sides["biden"]["index"])},
                   files={"images": twins}).json()
    assert out["accepted"] == 0 and out["images"][0]["reason"] == "face_too_small"


def test_library_takes_a_chosen_image_alone_or_in_a_list(api, twins, sides):
    """facegate.Chosen in the library: one Chosen image (not a list) for enrol, and for identify."""
    g = api.app.state.service.gallery
    res = g.enroll("kyc", "lib-biden", Chosen(twins, sides["biden"]["index"]), consent=ConsentSpec(purposes=("kyc",)))
    assert res.accepted == 1 and res.images[0].source == "image[0]"
    hit = g.identify("kyc", Chosen(twins, sides["biden"]["box"]), purpose="kyc")
    assert {c.subject for c in hit.candidates} >= {"lib-biden"}
    assert g.verify("kyc", "lib-biden", Chosen(twins, sides["biden"]["index"]), purpose="kyc").match
    assert not g.verify("kyc", "lib-biden", Chosen(twins, sides["obama"]["index"]), purpose="kyc").match


def test_verify_against_a_subject_takes_the_choice(api, twins, sides):
    """/v1/verify in subject mode: the ambiguous probe is refused with candidates, then verified
    with the face chosen (by index over HTTP, by box through the typed client)."""
    body = {"purpose": "kyc", "collection": "kyc", "subject": "obama"}
    r = api.post("/v1/verify", data=body, files={"image": twins})
    assert r.status_code == 422 and r.json()["code"] == "ambiguous_face"
    hit = api.post("/v1/verify", data={**body, "face": str(sides["obama"]["index"])}, files={"image": twins})
    assert hit.status_code == 200 and hit.json()["decision"] == "match", hit.text
    miss = api.post("/v1/verify", data={**body, "face": str(sides["biden"]["index"])}, files={"image": twins})
    assert miss.status_code == 200 and miss.json()["decision"] == "no_match"
    client = Client(http=api)
    assert client.verify_subject("kyc", "obama", twins, purpose="kyc", face=sides["obama"]["box"]).match is True
    # face/box belong to the subject mode, face_a/face_b to the image-vs-image mode
    wrong_mode = api.post("/v1/verify", data={"purpose": "kyc", "face": "0"}, files={"image_a": twins, "image_b": twins})
    assert wrong_mode.status_code == 422 and wrong_mode.json()["code"] == "validation_error"
    wrong_mode = api.post("/v1/verify", data={**body, "face_a": "0"}, files={"image": twins})
    assert wrong_mode.status_code == 422 and wrong_mode.json()["code"] == "validation_error"
    live = api.post("/v1/verify", json={**body, "liveness_session": "s1", "face": 0})
    assert live.status_code == 422 and "liveness" in live.json()["detail"]
