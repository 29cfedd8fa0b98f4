"""The subject rule through FaceEngine on real composites of the public-domain fixtures: a
central face beats a larger off-centre one, explicit choices by index and by box, refusals
that list the candidates. ``scene`` builds the composites (also used by the CLI, API and
console tests)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from facegate.engine import Chosen
from facegate.errors import AmbiguousFaceError, FaceBoxNotFoundError, FaceIndexError
from facegate.vision import decode

CANVAS = (960, 640)  # width, height
# Obama near the centre; Biden off-centre and larger: a person means Obama.
CENTRE_VS_LARGER_SIDE = [("obama_1", 0.12, 0.5, 0.45), ("biden_1", 0.165, 0.84, 0.45)]
# Two equal faces at equal distance either side of the centre: nobody can say who is meant.
TWINS = [("obama_1", 0.14, 0.27, 0.45), ("biden_1", 0.14, 0.73, 0.45)]


def scene(engine, photos, placed) -> np.ndarray:
    """An RGB canvas with each ``(photo, face width / canvas width, centre x, centre y)`` head
    pasted so its detected face has that width and centre (fractions of the canvas)."""
    w, h = CANVAS
    canvas = np.full((h, w, 3), 120, np.uint8)
    for name, width, cx, cy in placed:
        rgb = decode(photos[name])
        fx, fy, fw, fh = engine.face(rgb).box
        s = width * w / fw
        head = cv2.resize(rgb, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        # The head and shoulders: 0.35 face widths around the face, clipped to the canvas.
        x0, y0 = int((fx - 0.35 * fw) * s), int((fy - 0.35 * fh) * s)
        x1, y1 = int((fx + 1.35 * fw) * s), int((fy + 1.35 * fh) * s)
        dx, dy = int(cx * w - (fx + fw / 2) * s), int(cy * h - (fy + fh / 2) * s)
        x0, y0 = max(x0, 0, -dx), max(y0, 0, -dy)
        x1, y1 = min(x1, head.shape[1], w - dx), min(y1, head.shape[0], h - dy)
        canvas[y0 + dy : y1 + dy, x0 + dx : x1 + dx] = head[y0:y1, x0:x1]
    return canvas


def jpeg(rgb: np.ndarray) -> bytes:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 92])
    assert ok
    return buf.tobytes()


@pytest.fixture(scope="module")
def centre_scene(engine, photos):
    return scene(engine, photos, CENTRE_VS_LARGER_SIDE)


def _same_person(engine, face_rgb, photo) -> float:
    return engine.compare(engine.embed(face_rgb), engine.embed(photo))


def test_central_face_beats_larger_offcentre_face(engine, photos, centre_scene):
    faces = engine.detect(centre_scene)
    assert len(faces) == 2
    by_x = sorted(faces, key=lambda f: f.box[0])
    assert by_x[1].box[2] > 1.2 * by_x[0].box[2]  # the off-centre face really is larger
    subject = engine.face(centre_scene)
    assert subject.box == by_x[0].box  # the central one
    assert faces[0].box == subject.box  # and detect() lists the subject first
    emb = engine.embed(centre_scene)
    assert engine.compare(emb, engine.embed(photos["obama_2"])) > engine.compare(emb, engine.embed(photos["biden_1"]))


def test_explicit_choice_by_index_and_by_box(engine, photos, centre_scene):
    faces = engine.detect(centre_scene)
    other = next(i for i, f in enumerate(faces) if f.box[0] > CANVAS[0] / 2)
    chosen = engine.face(centre_scene, face=other)
    assert chosen.box == faces[other].box
    x, y, w, h = faces[other].box
    assert engine.face(centre_scene, face=(x + 10, y - 5, w * 0.8, h * 1.1)).box == faces[other].box
    assert engine.face(Chosen(centre_scene, other)).box == faces[other].box
    # The choice reaches verification: the off-centre face is Biden, not Obama.
    assert engine.verify(centre_scene, photos["biden_1"], face_a=other).match
    assert not engine.verify(centre_scene, photos["biden_1"]).match
    assert engine.verify(photos["obama_2"], Chosen(centre_scene, 1 - other)).match
    # embed_many honours a Chosen image in place.
    plain, picked = engine.embed_many([centre_scene, Chosen(centre_scene, other)])
    assert plain.face.box != picked.face.box and picked.face.box == faces[other].box


def test_choice_that_names_no_face_is_a_specific_error(engine, centre_scene):
    with pytest.raises(FaceIndexError) as exc:
        engine.face(centre_scene, face=2)
    assert exc.value.http_status == 422 and exc.value.details == {"face": 2, "faces": 2}
    with pytest.raises(FaceBoxNotFoundError) as box_exc:
        engine.embed(centre_scene, face=(0, 0, 20, 20))
    assert [c["face"] for c in box_exc.value.details["candidates"]] == [0, 1]


def test_comparable_faces_are_refused_with_candidates(engine, photos):
    twins = scene(engine, photos, TWINS)
    faces = engine.detect(twins)
    with pytest.raises(AmbiguousFaceError) as exc:
        engine.face(twins)
    candidates = json.loads(json.dumps(exc.value.to_dict()))["candidates"]  # plain JSON all the way down
    assert [c["face"] for c in candidates] == [0, 1]
    assert [c["box"] for c in candidates] == [[round(v, 1) for v in f.box] for f in faces]
    assert all(len(c["landmarks"]) == 5 and 0 < c["score"] <= 1 for c in candidates)
    # Each candidate's index is accepted back.
    for c in candidates:
        assert engine.face(twins, face=c["face"]).box == faces[c["face"]].box
