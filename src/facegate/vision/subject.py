"""Which detected face is the photo's subject — the one rule the engine, the service and the
gallery's enrolment gate share (docs/subject-face.md).

A person picks the face near the centre over an off-centre one beside it (even a somewhat larger
one), and a clearly dominant face over small ones. Each face gets a prominence: its size,
weighted by how central it is and by the detector's confidence. The most prominent face is the
subject unless another face is *genuinely comparable*: similar in size AND in distance from the
centre (two people side by side), or the photo is a group of several similar-sized faces. Then
the rule refuses (AmbiguousFaceError with every face as a candidate) rather than guess.

The constants come from identity-disjoint cross-validation on two-face composites of the dev
photos (bench/subject.py, docs/subject-face.md).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import AmbiguousFaceError, FaceBoxNotFoundError, FaceIndexError, NoFaceError
from ..results import Face

FaceRef = int | Sequence[float]  # an index into detect()'s order, or a box (x, y, w, h)


@dataclass(frozen=True)
class SubjectRule:
    """The rule's constants.

    - ``centrality``: exponent of the centre weight ``(1 - off_centre)``; higher lets a central
      face beat a larger off-centre one.
    - ``similar_size``: two faces whose sizes (square root of area) are within this ratio are of
      similar size.
    - ``similar_offset``: two faces whose distances from the centre (0 = centre, 1 = corner)
      differ by at most this fraction of the larger distance are equally central: near the
      centre a small step matters, while two faces both far out (side by side) are equally
      off-centre even when one is a bit further.
    - ``margin``: optional stricter gate (e.g. enrolment): also refuse when the runner-up's
      prominence is at least this fraction of the subject's.
    """

    centrality: float = 1.5
    similar_size: float = 0.6
    similar_offset: float = 0.3
    margin: float | None = None


DEFAULT_RULE = SubjectRule()


def off_centre(box: Sequence[float], image_size: tuple[int, int]) -> float:
    """Distance of the box centre from the image centre: 0 at the centre, 1 at a corner."""
    width, height = image_size
    x, y, w, h = (float(v) for v in box)
    dx = (x + w / 2 - width / 2) / (width / 2)
    dy = (y + h / 2 - height / 2) / (height / 2)
    return min(math.hypot(dx, dy) / math.sqrt(2), 1.0)


def face_size(box: Sequence[float], image_size: tuple[int, int]) -> float:
    """Square root of the box's share of the image area (0…1)."""
    width, height = image_size
    return math.sqrt(max(float(box[2]) * float(box[3]), 0.0) / (width * height))


def prominence(box: Sequence[float], score: float, image_size: tuple[int, int], rule: SubjectRule = DEFAULT_RULE) -> float:
    """Size weighted by centrality and detector confidence (0…1); the subject has the highest."""
    centre = float((1.0 - off_centre(box, image_size)) ** rule.centrality)  # off_centre is 0…1: a real power
    return face_size(box, image_size) * centre * min(max(float(score), 0.0), 1.0)


def _comparable(a: Face, b: Face, image_size: tuple[int, int], rule: SubjectRule) -> bool:
    sa, sb = face_size(a.box, image_size), face_size(b.box, image_size)
    similar_size = min(sa, sb) >= rule.similar_size * max(sa, sb)
    oa, ob = off_centre(a.box, image_size), off_centre(b.box, image_size)
    similar_offset = abs(oa - ob) <= rule.similar_offset * max(oa, ob)
    return similar_size and similar_offset


def candidates(faces: Sequence[Face]) -> list[dict[str, object]]:
    """Every face as plain lists, with the ``face`` index a caller passes to choose it."""
    return [
        {
            "face": i,
            "box": [round(float(v), 1) for v in f.box],
            "landmarks": [[round(float(x), 1), round(float(y), 1)] for x, y in f.landmarks],
            "score": round(float(f.score), 4),
        }
        for i, f in enumerate(faces)
    ]


def choose_subject(faces: Sequence[Face], image_size: tuple[int, int], rule: SubjectRule = DEFAULT_RULE) -> Face:
    """The subject among ``faces`` (any order) of an image of ``image_size`` = (width, height).

    Raises NoFaceError when there is no face and AmbiguousFaceError (listing ``faces`` as
    candidates, in the given order) when no face is clearly the subject.
    """
    if not faces:
        raise NoFaceError("no face found in the image")
    ranked = sorted(range(len(faces)), key=lambda i: prominence(faces[i].box, faces[i].score, image_size, rule), reverse=True)
    best = faces[ranked[0]]
    others = [faces[i] for i in ranked[1:]]
    sizes = [face_size(f.box, image_size) for f in others]
    own = face_size(best.box, image_size)
    similar_sized = sum(1 for s in sizes if min(s, own) >= rule.similar_size * max(s, own))
    why = None
    if any(_comparable(best, f, image_size, rule) for f in others):
        why = "two faces are about equally large and equally central"
    elif similar_sized >= 2:
        why = f"{similar_sized + 1} faces are about equally large (a group photo)"
    elif rule.margin is not None and others:
        top = prominence(best.box, best.score, image_size, rule)
        if prominence(others[0].box, others[0].score, image_size, rule) >= rule.margin * top:
            why = "a second face is nearly as prominent as the first"
    if why is not None:
        raise AmbiguousFaceError(
            f"{len(faces)} faces found and {why}; choose one (face index or box) or crop the image to the person meant",
            candidates=candidates(faces),
        )
    return best


def iou(a: Sequence[float], b: Sequence[float]) -> float:
    ax, ay, aw, ah = (float(v) for v in a)
    bx, by, bw, bh = (float(v) for v in b)
    iw = max(0.0, min(ax + aw, bx + bw) - max(ax, bx))
    ih = max(0.0, min(ay + ah, by + bh) - max(ay, by))
    inter = iw * ih
    union = max(aw, 0.0) * max(ah, 0.0) + max(bw, 0.0) * max(bh, 0.0) - inter
    return inter / union if union > 0 else 0.0


def pick_face(faces: Sequence[Face], ref: FaceRef) -> Face:
    """The face a caller chose: ``ref`` is an index into ``faces`` or a box (x, y, w, h), which
    selects the face whose box overlaps it most (intersection over union)."""
    if not faces:
        raise NoFaceError("no face found in the image")
    if isinstance(ref, int):
        if not 0 <= ref < len(faces):
            raise FaceIndexError(f"face {ref} does not exist: the image has {len(faces)} face(s), numbered from 0",
                                 face=ref, faces=len(faces))
        return faces[ref]
    box = [float(v) for v in ref]
    if len(box) != 4:
        raise FaceBoxNotFoundError("a face box is four numbers: x, y, width, height", box=box, candidates=candidates(faces))
    overlaps = [iou(f.box, box) for f in faces]
    best = max(range(len(faces)), key=overlaps.__getitem__)
    if overlaps[best] <= 0.0:
        raise FaceBoxNotFoundError("no detected face overlaps the given box", box=[round(v, 1) for v in box],
                                   candidates=candidates(faces))
    return faces[best]
