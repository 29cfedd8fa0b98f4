"""The subject rule as a pure function of face boxes and scores (vision/subject.py)."""

from __future__ import annotations

import json

import pytest

from facegate.errors import AmbiguousFaceError, FaceBoxNotFoundError, FaceIndexError, NoFaceError
from facegate.results import Face, Quality
from facegate.vision.subject import SubjectRule, choose_subject, pick_face

SIZE = (1000, 800)  # width, height
Q = Quality(40, 100, 0, 0, 0, 120, 0, 0.9)


def face(cx: float, cy: float, w: float, score: float = 0.9) -> Face:
    """A face of width ``w`` (height 1.25 w) centred on (cx, cy), in pixels."""
    h = 1.25 * w
    box = (cx - w / 2, cy - h / 2, w, h)
    offsets = ((-0.2, -0.1), (0.2, -0.1), (0, 0.05), (-0.15, 0.25), (0.15, 0.25))
    landmarks = tuple((cx + dx * w, cy + dy * h) for dx, dy in offsets)
    return Face(box, landmarks, score, Q)


def test_central_face_beats_a_larger_one_beside_it():
    centre, side = face(500, 380, 120), face(850, 360, 165)
    assert choose_subject([side, centre], SIZE) is centre
    assert choose_subject([centre, side], SIZE) is centre


def test_dominant_face_beats_small_ones_even_nearer_the_centre():
    big, small = face(380, 400, 240), face(560, 300, 80)
    assert choose_subject([small, big], SIZE) is big


def test_similar_size_and_centrality_is_refused_with_every_face_as_candidate():
    left, right = face(300, 400, 140), face(700, 410, 135)
    with pytest.raises(AmbiguousFaceError) as exc:
        choose_subject([left, right], SIZE)
    out = json.loads(json.dumps(exc.value.to_dict()))
    assert out["code"] == "ambiguous_face" and exc.value.http_status == 422
    assert [c["face"] for c in out["candidates"]] == [0, 1]
    assert out["candidates"][1]["box"] == [round(v, 1) for v in right.box]
    assert len(out["candidates"][0]["landmarks"]) == 5 and out["candidates"][0]["score"] == 0.9


def test_two_faces_far_out_on_both_sides_are_comparable_even_if_one_is_a_bit_nearer():
    # Both well off-centre (0.50 vs 0.62 of the half-diagonal): side by side, not "the central one".
    left, right = face(210, 130, 130), face(830, 100, 130)
    with pytest.raises(AmbiguousFaceError):
        choose_subject([left, right], SIZE)


def test_equal_size_but_clearly_more_central_wins():
    assert choose_subject([face(180, 400, 140), face(520, 400, 140)], SIZE).box[0] == 450


def test_a_row_of_similar_faces_is_a_group_not_a_subject():
    row = [face(100 + 200 * i, 400, 60) for i in range(5)]  # the middle one is at the centre
    with pytest.raises(AmbiguousFaceError, match="group"):
        choose_subject(row, SIZE)


def test_detector_confidence_weighs_in():
    centre = face(500, 400, 120)
    assert choose_subject([centre, face(700, 400, 260, score=0.95)], SIZE) is not centre  # clearly dominant
    assert choose_subject([centre, face(700, 400, 260, score=0.3)], SIZE) is centre  # the detector is unsure of it


def test_margin_makes_the_rule_stricter_for_enrolment():
    centre, side = face(500, 400, 150), face(800, 400, 140)
    assert choose_subject([centre, side], SIZE) is centre
    with pytest.raises(AmbiguousFaceError, match="nearly as prominent"):
        choose_subject([centre, side], SIZE, SubjectRule(margin=0.3))


def test_single_and_no_face():
    only = face(100, 100, 30)
    assert choose_subject([only], SIZE) is only
    with pytest.raises(NoFaceError):
        choose_subject([], SIZE)


def test_pick_by_index_or_by_most_overlapping_box():
    faces = [face(500, 400, 150), face(800, 400, 140), face(820, 420, 60)]
    assert pick_face(faces, 1) is faces[1]
    x, y, w, h = faces[1].box
    assert pick_face(faces, (x + 15, y - 10, w, h)) is faces[1]  # overlaps faces[2] too, but less
    assert pick_face(faces, [float(v) for v in faces[2].box]) is faces[2]
    with pytest.raises(FaceIndexError) as exc:
        pick_face(faces, 3)
    assert exc.value.code == "face_index_out_of_range" and exc.value.details == {"face": 3, "faces": 3}
    with pytest.raises(FaceIndexError):
        pick_face(faces, -1)
    with pytest.raises(FaceBoxNotFoundError) as box_exc:
        pick_face(faces, (0, 0, 50, 50))
    assert len(box_exc.value.details["candidates"]) == 3
    with pytest.raises(NoFaceError):
        pick_face([], 0)
