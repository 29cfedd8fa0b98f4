"""Which face is the subject: the old prominence-ratio rule vs vision/subject.py, on the dev set.

    nice -n 10 .venv/bin/python bench/subject.py            # ~3 min on the 2-core machine
    nice -n 10 .venv/bin/python bench/subject.py figures    # the pictures of docs/subject-face.md

1. Every dev image and group photo: refusals (AmbiguousFaceError) of each rule, and whether the
   new rule ever picks a face much smaller than the largest one (a background face).
2. Two-face composites from labelled dev photos (fixed seed): the intended person's head near the
   centre, a different identity's head off-centre and larger, similar or smaller; a dominant
   head slightly off-centre with a small one near the centre; and "twins" (equal heads at equal
   distance either side of the centre, where refusing is the right answer). The labelled person
   is the detected face whose centre lies in the intended photo's placement.
3. Identity-disjoint cross-validation: the rule's constants are grid-searched on the composites
   of half A's identities and reported on half B's, then the other way round.

Objective for the grid: correct picks − 2 × wrong picks (a wrong face is worse than a refusal),
plus, on twins, refusals − picks. Figures go to stdout as markdown and to bench/out/subject.json.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import pickle
import random
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from facegate.engine import FaceEngine
from facegate.errors import AmbiguousFaceError
from facegate.results import Face
from facegate.vision import decode
from facegate.vision.subject import DEFAULT_RULE, SubjectRule, choose_subject, face_size, off_centre

DEV = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-dev"
FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "data"
OUT = Path(__file__).resolve().parent / "out"
DOCS_IMG = Path(__file__).resolve().parents[1] / "docs" / "img"
CANVAS = (960, 640)  # width, height: a 3:2 news photo
LAYOUTS = ("larger_side", "similar_side", "smaller_side", "dominant_offcentre", "leading_pair", "twins")
GRID = {
    "centrality": (0.5, 1.0, 1.5, 2.0, 3.0, 4.0),
    "similar_size": (0.6, 0.7, 0.8, 0.9),
    "similar_offset": (0.0, 0.15, 0.3, 0.45, 0.6, 0.75),
}
OLD_RATIO = 0.85


def old_rule(faces: list[Face], size: tuple[int, int]) -> int | None:
    """The rule before vision/subject.py: size × (1 − off-centre/2), refuse when the second is ≥ 0.85 of the first."""
    prom = [face_size(f.box, size) * (1 - 0.5 * off_centre(f.box, size)) for f in faces]
    order = sorted(range(len(faces)), key=prom.__getitem__, reverse=True)
    if len(order) > 1 and prom[order[1]] >= OLD_RATIO * prom[order[0]]:
        return None
    return order[0]


def new_rule(faces: list[Face], size: tuple[int, int], rule: SubjectRule = DEFAULT_RULE) -> int | None:
    try:
        chosen = choose_subject(faces, size, rule)
    except AmbiguousFaceError:
        return None
    return next(i for i, f in enumerate(faces) if f is chosen)


def raw_faces(engine: FaceEngine, rgb: np.ndarray) -> list[Face]:
    """Detections as Faces (box, landmarks, score): all the rules look at."""
    return [
        Face(tuple(float(v) for v in d.box), tuple((float(x), float(y)) for x, y in d.landmarks), d.score, None)  # type: ignore[arg-type]
        for d in engine.detector.detect(rgb)
    ]


# --- 1. dev images and group photos --------------------------------------------------------------


def dev_images() -> list[tuple[str, str]]:
    rows = [line.split("\t") for line in (DEV / "MANIFEST.tsv").read_text().splitlines()[1:] if line.strip()]
    groups = json.loads((DEV / "groups" / "groups.json").read_text())
    return [(r[0], r[1]) for r in rows] + [(g["path"], "group") for g in groups]


def refusal_survey(engine: FaceEngine) -> tuple[dict, dict[str, list]]:
    stats = {"images": 0, "multi_face": 0, "old_refused": 0, "new_refused": 0, "groups": 0, "groups_old_refused": 0,
             "groups_new_refused": 0, "new_picks_small_face": 0}
    detections: dict[str, list] = {}
    for path, identity in dev_images():
        rgb = decode(DEV / path)
        size = (rgb.shape[1], rgb.shape[0])
        faces = raw_faces(engine, rgb)
        detections[path] = [identity, size, faces]
        if not faces:
            continue
        group = identity == "group"
        stats["groups" if group else "images"] += 1
        if len(faces) < 2:
            continue
        stats["multi_face"] += not group
        old, new = old_rule(faces, size), new_rule(faces, size)
        if group or old != new:
            print(f"  {path}: {len(faces)} faces, old {'refuses' if old is None else old}, new "
                  f"{'refuses' if new is None else new}",
                  file=sys.stderr)
        stats["groups_old_refused" if group else "old_refused"] += old is None
        stats["groups_new_refused" if group else "new_refused"] += new is None
        if new is not None and not group:
            largest = max(face_size(f.box, size) for f in faces)
            if face_size(faces[new].box, size) < 0.5 * largest:
                stats["new_picks_small_face"] += 1
                print(f"  small face chosen in {path}", file=sys.stderr)
    return stats, detections


# --- 2. composites ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Head:
    """A head-and-shoulders patch cut from a dev photo and the face box inside it."""

    patch: np.ndarray
    face: tuple[float, float, float, float]


def head(rgb: np.ndarray, face: Face, pad: float = 0.3) -> Head:
    x, y, w, h = face.box
    x0, y0 = max(int(x - pad * w), 0), max(int(y - pad * h), 0)
    x1, y1 = min(int(x + w + pad * w), rgb.shape[1]), min(int(y + h + pad * h), rgb.shape[0])
    return Head(rgb[y0:y1, x0:x1].copy(), (x - x0, y - y0, w, h))


def paste(canvas: np.ndarray, h: Head, face_width: float, cx: float, cy: float) -> tuple[int, int, int, int] | None:
    """Scale ``h`` so its face is ``face_width`` px wide with its centre at (cx, cy); the placed
    rectangle, or None when it would leave the canvas."""
    s = face_width / h.face[2]
    patch = cv2.resize(h.patch, None, fx=s, fy=s, interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_CUBIC)
    fx, fy, fw, fh = (v * s for v in h.face)
    x0, y0 = int(round(cx - fx - fw / 2)), int(round(cy - fy - fh / 2))
    ph, pw = patch.shape[:2]
    if x0 < 0 or y0 < 0 or x0 + pw > canvas.shape[1] or y0 + ph > canvas.shape[0]:
        return None
    canvas[y0 : y0 + ph, x0 : x0 + pw] = patch
    return x0, y0, pw, ph


def backdrop(rng: random.Random) -> np.ndarray:
    """A smooth random colour field with mild grain: a defocused scene with no face in it (a
    blurred photo of a head still reads as a huge face to the detector)."""
    coarse = np.array([[[rng.randint(30, 220) for _ in range(3)] for _ in range(6)] for _ in range(4)], np.uint8)
    field = cv2.resize(coarse, CANVAS, interpolation=cv2.INTER_CUBIC).astype(np.int16)
    grain = np.random.default_rng(rng.randrange(2**32)).integers(-6, 7, field.shape, dtype=np.int16)
    return np.clip(field + grain, 0, 255).astype(np.uint8)


def _overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def compose(rng: random.Random, layout: str, intended: Head, other: Head, background: np.ndarray):
    """One composite: (rgb, intended rectangle, other rectangle) or None when it does not fit."""
    W, H = CANVAS
    for _ in range(20):
        canvas = background.copy()
        side = rng.choice((-1, 1))
        if layout == "dominant_offcentre":  # e.g. a rule-of-thirds portrait with a passer-by behind
            wi = rng.uniform(0.18, 0.26) * W
            ci = (W / 2 + side * rng.uniform(0.08, 0.22) * W, H * rng.uniform(0.4, 0.5))
            wo = wi * rng.uniform(0.25, 0.5)
            co = (W / 2 - side * rng.uniform(0.0, 0.2) * W, H * rng.uniform(0.3, 0.5))
        elif layout == "leading_pair":  # both off-centre; the intended head larger AND nearer the centre
            wi = rng.uniform(0.12, 0.17) * W
            ci = (W / 2 + side * rng.uniform(0.1, 0.2) * W, H * rng.uniform(0.38, 0.5))
            wo = wi * rng.uniform(0.65, 0.85)
            co = (W / 2 - side * rng.uniform(0.3, 0.4) * W, ci[1] + rng.uniform(-0.05, 0.05) * H)
        elif layout == "twins":
            wi = rng.uniform(0.11, 0.16) * W
            off = rng.uniform(0.17, 0.3) * W
            ci = (W / 2 + side * off, H * rng.uniform(0.42, 0.5))
            wo = wi * rng.uniform(0.95, 1.05)
            co = (W / 2 - side * off, ci[1] + rng.uniform(-0.02, 0.02) * H)
        else:
            scale = {"larger_side": (1.15, 1.5), "similar_side": (0.9, 1.1), "smaller_side": (0.5, 0.75)}[layout]
            wi = rng.uniform(0.1, 0.15) * W
            ci = (W / 2 + rng.uniform(-0.1, 0.1) * W, H * rng.uniform(0.38, 0.52))  # near, not at, the centre
            wo = wi * rng.uniform(*scale)
            co = (W / 2 + side * rng.uniform(0.28, 0.42) * W, ci[1] + rng.uniform(-0.08, 0.05) * H)
        ro = paste(canvas, other, wo, *co)
        if ro is None:
            continue
        ri = paste(canvas, intended, wi, *ci)
        if ri is None or _overlap(ri, ro):
            continue
        return canvas, ri, ro
    return None


def _inside(face: Face, rect: tuple[int, int, int, int]) -> bool:
    x, y, w, h = face.box
    cx, cy = x + w / 2, y + h / 2
    return rect[0] <= cx < rect[0] + rect[2] and rect[1] <= cy < rect[1] + rect[3]


def composites(engine: FaceEngine, detections: dict[str, list], identities: set[str], seed: str) -> list[dict]:
    """Composite samples for ``identities``: detections, canvas size and which face is whose."""
    rng = random.Random(seed)
    heads: dict[str, list[tuple[str, Head]]] = {}
    for path, (identity, _size, faces) in detections.items():
        if identity in identities and len(faces) == 1:
            heads.setdefault(identity, []).append((path, head(decode(DEV / path), faces[0])))
    names = sorted(heads)
    samples = []
    for n, (identity, (path, intended)) in enumerate((i, h) for i in names for h in heads[i]):
        layout = LAYOUTS[n % len(LAYOUTS)]
        other_id = rng.choice([i for i in names if i != identity])
        other = rng.choice(heads[other_id])[1]
        made = compose(rng, layout, intended, other, backdrop(rng))
        if made is None:
            continue
        rgb, ri, ro = made
        faces = raw_faces(engine, rgb)
        mine = [i for i, f in enumerate(faces) if _inside(f, ri)]
        theirs = [i for i, f in enumerate(faces) if _inside(f, ro)]
        if len(mine) != 1 or len(theirs) != 1:  # a head the detector missed: not a two-face case
            continue
        samples.append({"layout": layout, "faces": faces, "intended": mine[0], "source": path})
        if n % 100 == 0:
            print(f"  {seed}: {n} composites", file=sys.stderr)
    return samples


def score(samples: list[dict], pick) -> dict:
    """Per layout: correct / wrong / refused counts for ``pick(faces, size) -> index | None``."""
    out: dict[str, dict[str, int]] = {layout: {"n": 0, "correct": 0, "wrong": 0, "refused": 0} for layout in LAYOUTS}
    for s in samples:
        row = out[s["layout"]]
        got = pick(s["faces"], CANVAS)
        row["n"] += 1
        if got is None:
            row["refused"] += 1
        elif s["layout"] == "twins" or got != s["intended"]:
            row["wrong"] += 1
        else:
            row["correct"] += 1
    return out


def objective(table: dict) -> float:
    labelled = [r for k, r in table.items() if k != "twins"]
    twins = table["twins"]
    return sum(r["correct"] - 2 * r["wrong"] for r in labelled) + twins["refused"] - twins["wrong"]


def tune(samples: list[dict]) -> tuple[SubjectRule, float]:
    """The grid point with the best objective. The composites' labelled layouts all have a clear
    answer, so they cannot tell a cautious rule from a bold one that scores the same: ties go to
    the most cautious (the widest "comparable" band), then to the middle centrality."""
    middle = (len(GRID["centrality"]) - 1) / 2
    best: tuple[tuple[float, ...], SubjectRule] | None = None
    for values in itertools.product(*GRID.values()):
        rule = SubjectRule(**dict(zip(GRID, values)))
        value = objective(score(samples, functools.partial(new_rule, rule=rule)))
        caution = rule.similar_offset - rule.similar_size
        key = (value, round(caution, 6), -abs(GRID["centrality"].index(rule.centrality) - middle))
        if best is None or key > best[0]:
            best = (key, rule)
    assert best is not None
    return best[1], best[0][0]


def table_md(name: str, table: dict) -> list[str]:
    lines = []
    for layout, r in table.items():
        n = max(r["n"], 1)
        lines.append(f"| {name} | {layout} | {r['n']} | {r['correct'] / n:.1%} | {r['wrong'] / n:.1%} | {r['refused'] / n:.1%} |")
    return lines


def main(reuse: bool) -> None:
    engine = FaceEngine()
    stats, detections = refusal_survey(engine)
    print("## Dev images and group photos\n")
    print(json.dumps(stats, indent=1))
    halves = {h: set((DEV / "splits" / f"identities_{h}.txt").read_text().split()) for h in "AB"}
    cache = OUT / "subject_samples.pkl"  # detections only (no pixels): lets --reuse re-fit without detecting again
    if reuse and cache.exists():
        samples = pickle.loads(cache.read_bytes())
    else:
        samples = {h: composites(engine, detections, ids, f"subject:{h}") for h, ids in halves.items()}
        OUT.mkdir(exist_ok=True)
        cache.write_bytes(pickle.dumps(samples))
    print(f"\n{sum(map(len, samples.values()))} composites with both faces detected", file=sys.stderr)
    report: dict = {"survey": stats, "folds": {}}
    print("\n## Composites: tuned on one half, reported on the other\n")
    print("| fold | layout | n | picks labelled person | picks other | refuses |\n|---|---|---|---|---|---|")
    for tune_on, test_on in (("A", "B"), ("B", "A")):
        rule, fit = tune(samples[tune_on])
        old = score(samples[test_on], old_rule)
        new = score(samples[test_on], functools.partial(new_rule, rule=rule))
        shipped = score(samples[test_on], new_rule)
        for name, t in ((f"old, {test_on}", old), (f"new (fit on {tune_on}), {test_on}", new), (f"shipped, {test_on}", shipped)):
            print("\n".join(table_md(name, t)))
        report["folds"][f"{tune_on}->{test_on}"] = {
            "rule": asdict(rule), "fit_objective": fit, "old": old, "new": new, "shipped": shipped,
            "objective": {"old": objective(old), "new": objective(new), "shipped": objective(shipped)},
        }
    pooled, _ = tune(samples["A"] + samples["B"])
    report["fit_on_all"] = asdict(pooled)
    report["shipped_rule"] = asdict(DEFAULT_RULE)
    print(f"\nfit on A+B: {pooled}\nshipped:    {DEFAULT_RULE}")
    print("\n" + json.dumps({k: {"rule": v["rule"], "objective": v["objective"]} for k, v in report["folds"].items()}, indent=1))
    OUT.mkdir(exist_ok=True)
    (OUT / "subject.json").write_text(json.dumps(report, indent=1))


# --- pictures for docs/subject-face.md (public-domain fixtures only) -------------------------------


def figures() -> None:
    """Three composites of the public-domain fixtures with every face's size and distance from
    the centre, the subject in green (or the refused pair in red)."""
    engine = FaceEngine()
    heads = {}
    for name in ("obama_1", "obama_2", "biden_1", "collins_1"):
        rgb = decode(FIXTURES / f"{name}.jpg")
        heads[name] = head(rgb, engine.face(rgb))
    background = backdrop(random.Random("subject:figures"))
    W, H = CANVAS
    scenes = {  # (fixture, face width / canvas width, centre x, centre y)
        "subject-centre-vs-larger-side": [("obama_1", 0.12, 0.5, 0.45), ("biden_1", 0.165, 0.84, 0.45)],
        "subject-dominant-vs-small": [("collins_1", 0.22, 0.33, 0.47), ("obama_2", 0.08, 0.6, 0.5)],
        "subject-refused-comparable": [("obama_1", 0.14, 0.27, 0.45), ("biden_1", 0.14, 0.73, 0.45)],
    }
    DOCS_IMG.mkdir(parents=True, exist_ok=True)
    for name, placed in scenes.items():
        canvas = background.copy()
        for who, width, cx, cy in placed:
            assert paste(canvas, heads[who], width * W, cx * W, cy * H) is not None, (name, who)
        faces = engine.detect(canvas)
        try:
            chosen: Face | None = engine.face(canvas)
        except AmbiguousFaceError:
            chosen = None
        out = cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR)
        cv2.drawMarker(out, (W // 2, H // 2), (255, 255, 255), cv2.MARKER_CROSS, 28, 2)
        for i, f in enumerate(faces):
            x, y, w, h = (int(v) for v in f.box)
            colour = (60, 60, 220) if chosen is None else (60, 190, 60) if f.box == chosen.box else (170, 170, 170)
            cv2.rectangle(out, (x, y), (x + w, y + h), colour, 3)
            lines = [f"face {i}", f"size {face_size(f.box, CANVAS):.3f}", f"off-centre {off_centre(f.box, CANVAS):.2f}"]
            for k, text in enumerate(lines):
                org = (x, min(y + h + 22 + 20 * k, H - 8))
                cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.55, (0, 0, 0), 4, cv2.LINE_AA)
                cv2.putText(out, text, org, cv2.FONT_HERSHEY_SIMPLEX, 0.55, colour, 1, cv2.LINE_AA)
        verdict = "refused: comparable faces, choose one" if chosen is None else f"subject: face {faces.index(chosen)}"
        cv2.putText(out, verdict, (14, 34), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (0, 0, 0), 5, cv2.LINE_AA)
        cv2.putText(out, verdict, (14, 34), cv2.FONT_HERSHEY_SIMPLEX, 0.9, (255, 255, 255), 2, cv2.LINE_AA)
        # A 192-colour palette keeps each picture around 150 kB in the repository.
        Image.fromarray(cv2.cvtColor(out, cv2.COLOR_BGR2RGB)).quantize(192).save(DOCS_IMG / f"{name}.png", optimize=True)
        print(f"{name}: {verdict}; old rule: {'refuses' if old_rule(faces, CANVAS) is None else 'picks'}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("what", nargs="?", choices=("measure", "figures"), default="measure")
    parser.add_argument("--reuse", action="store_true", help="reuse the composites' detections of the last run")
    args = parser.parse_args()
    figures() if args.what == "figures" else main(args.reuse)
