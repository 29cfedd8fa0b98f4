"""Identity-disjoint cross-validation of every pipeline choice made on the dev set.

    nice -n 10 .venv/bin/python bench/cv.py            # ~10 min on a loaded 2-core machine, cached after

faces-dev is split into two identity-disjoint halves (../shared/data/faces-dev/splits: A and B,
all pairs within each half). For each choice (detector padding, minimum detector size, alignment
resampling, similarity estimator, flip TTA, the accurate mode's fusion weight and a quality-aware
score normalisation) every alternative is scored on both halves; the alternative picked on one
half (highest TAR@FMR1e-3, failures to acquire counted as rejections, then lower EER) is
reported on the other. A pick is adopted only if the picks of both halves beat the plain option
(what the OpenCV reference does, or no fusion) on the other half; failing that the current
default is kept only if it beats the plain option on both halves, else the plain option is
(see :func:`cross_validate`). 1:N search with one vs three templates per subject is measured
too.

Within a half there are ~50k impostor pairs (FMR resolution ~2e-5): TAR@FMR1e-4 rests on ~5
impostor scores and moves by a few points with one face, so only differences that agree on both
halves mean anything.

Templates are cached per image and configuration under bench/out/cv/ (keyed by the pipeline
source, so a code change recomputes them); results go to bench/out/cv.json.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from facegate import FaceEngine  # noqa: E402
from facegate.errors import FacegateError  # noqa: E402
from facegate.evaluation import evaluate, read_pairs  # noqa: E402
from facegate.models import YUNET  # noqa: E402
from facegate.vision import FaceDetector, align, decode  # noqa: E402
from facegate.vision.dlib_embed import DlibEmbedder  # noqa: E402
from peers import OpenCVReference, fta_cause, versions  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
DEFAULT_ROOT = REPO.parent / "shared" / "data" / "faces-dev"
OUT = Path(__file__).resolve().parent / "out"
FMRS = (1e-3, 1e-4)
HALVES = ("A", "B")
# What the cached templates depend on (models.py only pins files whose sha256 is checked anyway).
SOURCES = ("src/facegate/engine.py", "src/facegate/vision")


@dataclass(frozen=True)
class Config:
    """One facegate pipeline configuration: detector keywords, alignment keywords, flip TTA."""

    detector: dict = field(default_factory=dict)
    align: dict = field(default_factory=dict)
    tta: bool = False

    def key(self, part: str) -> str:
        what = {"detector": self.detector} if part == "faces" else {"detector": self.detector, "align": self.align,
                                                                     "tta": self.tta, "part": part}
        return json.dumps(what, sort_keys=True)


DEFAULT = Config()
# choice -> [(label, config, plain)], the current default first; "plain" marks what the OpenCV
# reference does (the fallback when the default does not win on both halves).
CHOICES: dict[str, list[tuple[str, Config, bool]]] = {
    "detector padding": [("15 % (default)", DEFAULT, False), ("0", Config(detector={"pad_ratio": 0.0}), True),
                         ("25 %", Config(detector={"pad_ratio": 0.25}), False)],
    "detector min side": [("320 (default)", DEFAULT, False), ("none", Config(detector={"min_side": 0}), True),
                          ("640", Config(detector={"min_side": 640}), False)],
    "alignment resampling": [("bilinear (default)", DEFAULT, True),
                             ("area-averaged shrink", Config(align={"resample": "area"}), False),
                             ("cubic", Config(align={"resample": "cubic"}), False)],
    "similarity estimator": [("cv2 LMEDS (default)", DEFAULT, True),
                             ("Umeyama least squares", Config(align={"estimator": "umeyama"}), False)],
    "flip TTA": [("off (default)", DEFAULT, True), ("on", Config(tta=True), False)],
}


class Cache:
    """Per-image arrays per configuration, in bench/out/cv/<digest>.npz."""

    def __init__(self, root: Path, images: list[str]) -> None:
        self.root = root
        root.mkdir(parents=True, exist_ok=True)
        h = hashlib.sha256("\n".join(images).encode())
        for src in SOURCES:
            p = REPO / src
            for f in sorted(p.rglob("*.py")) if p.is_dir() else [p]:
                h.update(f.read_bytes())
        self.salt = h.hexdigest()

    def path(self, key: str) -> Path:
        return self.root / f"{hashlib.sha256((self.salt + key).encode()).hexdigest()[:24]}.npz"

    def get(self, key: str, compute):
        p = self.path(key)
        if p.exists():
            with np.load(p, allow_pickle=False) as z:
                return {k: z[k] for k in z.files}
        out = compute()
        np.savez(p, **out)
        return out


class Runner:
    def __init__(self, root: Path, images: list[str], cache: Cache) -> None:
        self.root, self.images, self.cache = root, images, cache
        self.engine = FaceEngine("sface")
        self._dlib: DlibEmbedder | None = None

    def faces(self, cfg: Config) -> dict[str, np.ndarray]:
        """landmarks (N, 5, 2; NaN on failure), cause per image ("" when acquired)."""

        def compute() -> dict[str, np.ndarray]:
            self.engine.detector = FaceDetector(YUNET, max_side=640, **cfg.detector)
            lms = np.full((len(self.images), 5, 2), np.nan)
            causes = []
            for i, name in enumerate(self.images):
                try:
                    lms[i] = self.engine.face(self.root / name).landmarks
                    causes.append("")
                except FacegateError as exc:
                    causes.append(fta_cause(exc))
            return {"landmarks": lms, "causes": np.array(causes)}

        return self.cache.get(cfg.key("faces"), compute)

    def crops(self, cfg: Config, lms: np.ndarray) -> np.ndarray:
        out = np.zeros((len(self.images), 112, 112, 3), np.uint8)
        for i, name in enumerate(self.images):
            if not np.isnan(lms[i]).any():
                out[i] = align(decode(self.root / name), lms[i], **cfg.align)
        return out

    def templates(self, cfg: Config, part: str = "sface") -> dict[str, np.ndarray]:
        """vectors (N, dim; NaN rows on failure), causes, eye distance (px)."""
        faces = self.faces(cfg)

        def compute() -> dict[str, np.ndarray]:
            ok = ~np.isnan(faces["landmarks"]).any(axis=(1, 2))
            crops = self.crops(cfg, faces["landmarks"])[ok]
            if part == "dlib":
                self._dlib = self._dlib or DlibEmbedder()
                vec = np.concatenate([self._dlib.embed(crops[i : i + 16]) for i in range(0, len(crops), 16)])
            else:
                self.engine.flip_tta = cfg.tta
                vec = np.concatenate([self.engine.embed_crops(crops[i : i + 16]) for i in range(0, len(crops), 16)])
                self.engine.flip_tta = False
            out = np.full((len(self.images), vec.shape[1]), np.nan, np.float32)
            out[ok] = vec
            return {"vectors": out}

        lm = faces["landmarks"]
        eye = np.linalg.norm(lm[:, 0] - lm[:, 1], axis=1)
        return {**self.cache.get(cfg.key(part), compute), "causes": faces["causes"], "eye": eye}

    def reference(self) -> dict[str, np.ndarray]:
        def compute() -> dict[str, np.ndarray]:
            ref = OpenCVReference()
            out = np.full((len(self.images), 128), np.nan, np.float32)
            for i, name in enumerate(self.images):
                v = ref(self.root / name)
                if v is not None:
                    out[i] = v
            return {"vectors": out}

        v = self.cache.get("opencv-reference", compute)["vectors"]
        causes = np.where(np.isnan(v).any(axis=1), "no_face", "")
        return {"vectors": v, "causes": causes, "eye": np.full(len(v), np.nan)}


class Half:
    def __init__(self, name: str, root: Path, index: dict[str, int]) -> None:
        self.name = name
        self.pairs = read_pairs(str(root / "splits" / f"pairs_{name}.tsv"))
        self.images = sorted({p for a, b, _ in self.pairs for p in (a, b)})
        self.rows = np.array([index[p] for p in self.images])
        self.same = np.array([s for *_, s in self.pairs], dtype=bool)
        self.a = np.array([index[a] for a, _, _ in self.pairs])
        self.b = np.array([index[b] for _, b, _ in self.pairs])
        self.identity = {p: p.split("/")[1] for p in self.images}

    def scores(self, vectors: np.ndarray) -> np.ndarray:
        return np.einsum("ij,ij->i", vectors[self.a], vectors[self.b]).astype(np.float64)  # NaN on FTA

    def metrics(self, scores: np.ndarray, causes: np.ndarray) -> dict[str, object]:
        rep = evaluate(scores, self.same, fmrs=FMRS)
        c = causes[self.rows]
        return {
            "tar@1e-3": rep.tar_at_fmr[1e-3], "tar@1e-4": rep.tar_at_fmr[1e-4], "eer": rep.eer,
            "fta_images": int((c != "").sum()), "images": len(c),
            "fta_by_cause": {k: int((c == k).sum()) for k in ("no_face", "ambiguous", "other")},
            "genuine": rep.genuine, "impostor": rep.impostor,
        }


def criterion(m: dict[str, object]) -> tuple[float, float]:
    """TAR@FMR1e-3 (FTA counted as rejection), then lower EER: within a half FMR 1e-3 still
    rests on ~48 impostor pairs, 1e-4 on ~5, too few to choose by."""
    return round(float(m["tar@1e-3"]), 6), -round(float(m["eer"]), 6)


def cross_validate(options: list[tuple[str, bool, dict[str, dict]]]) -> dict[str, object]:
    """options: (label, plain, {half: metrics}); the first is the current default.

    The best option on each half is reported on the other. Decision:
    1. if each half's pick beats the plain option on the other half, adopt a pick (the one
       with the better mean criterion over both halves when they differ);
    2. else keep the default if it beats the plain option on both halves;
    3. else the plain option.
    """
    picks = {}
    for tune, test in (("A", "B"), ("B", "A")):
        best = max(options, key=lambda o: (criterion(o[2][tune]), o[1]))
        picks[tune] = {"picked": best[0], "reported_on": test, "metrics": best[2][test], "option": best}
    default, plain = options[0], next(o for o in options if o[1])
    if all(criterion(p["option"][2][p["reported_on"]]) > criterion(plain[2][p["reported_on"]]) for p in picks.values()):
        keep = max((p["option"] for p in picks.values()),
                   key=lambda o: float(np.mean([criterion(o[2][h])[0] for h in HALVES])))[0]
    elif all(criterion(default[2][h]) > criterion(plain[2][h]) for h in HALVES):
        keep = default[0]
    else:
        keep = plain[0]
    for p in picks.values():
        del p["option"]
    return {"picks": picks, "default": default[0], "decision": keep, "default_kept": keep == default[0]}


def fused(sface: np.ndarray, dlib: np.ndarray, w: float) -> np.ndarray:
    return np.concatenate([np.sqrt(w) * sface, np.sqrt(1 - w) * dlib], axis=1)


def quality_scores(half: Half, scores: np.ndarray, eye: np.ndarray, beta: float, eye_ok: float = 40.0) -> np.ndarray:
    """score − β·(1 − min(eye_a, eye_b)/eye_ok)₊: pairs with a small face are pushed down."""
    low = np.clip(1 - np.minimum(eye[half.a], eye[half.b]) / eye_ok, 0, 1)
    return scores - beta * low


def identification(half: Half, vectors: np.ndarray, templates: int, seed: int = 0) -> dict[str, float]:
    """Closed-set rank-1 and open-set FNIR at FPIR 1 % with ``templates`` enrolment images per
    subject (the best-scoring one counts). Subjects: identities of the half with ≥ 4 images;
    enrolment images are 3 seeded picks (the first ``templates`` of them used), probes the
    rest. Non-mated searches: every probe against the gallery without its own subject.
    A probe or enrolment image without a face counts as a miss / is skipped."""
    rng = np.random.default_rng(seed)
    by_id: dict[str, list[int]] = {}
    for p, row in zip(half.images, half.rows):
        by_id.setdefault(half.identity[p], []).append(int(row))
    gallery, probes = {}, []
    for ident, rows in sorted(by_id.items()):
        if len(rows) < 4:
            continue
        rows = list(rng.permutation(rows))
        enrol = [r for r in rows[:3][:templates] if not np.isnan(vectors[r]).any()]
        if enrol:
            gallery[ident] = vectors[enrol]
        probes += [(ident, r) for r in rows[3:]]
    names = list(gallery)
    mated_ok, mated_scores, nonmated = [], [], []
    for ident, r in probes:
        v = vectors[r]
        if np.isnan(v).any() or ident not in gallery:
            mated_ok.append(False)
            mated_scores.append(-np.inf)
            continue
        s = np.array([float(np.max(gallery[n] @ v)) for n in names])
        own = names.index(ident)
        mated_ok.append(int(np.argmax(s)) == own)
        mated_scores.append(s[own])
        nonmated.append(float(np.max(np.delete(s, own))))
    t = np.quantile(nonmated, 0.99)
    hits = np.array(mated_ok) & (np.array(mated_scores) > t)
    return {"rank1": float(np.mean(mated_ok)), "fnir@fpir1%": float(1 - hits.mean()),
            "subjects": len(names), "probes": len(probes), "nonmated_searches": len(nonmated)}


def fmt(m: dict[str, object]) -> str:
    c = m["fta_by_cause"]
    return (f"{m['tar@1e-3']:.4f} | {m['tar@1e-4']:.4f} | {m['eer']:.4f} | {m['fta_images']}/{m['images']} "
            f"({c['no_face']}/{c['ambiguous']}/{c['other']})")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    t0 = time.time()

    halves_images = [read_pairs(str(args.root / "splits" / f"pairs_{h}.tsv")) for h in HALVES]
    images = sorted({p for pairs in halves_images for a, b, _ in pairs for p in (a, b)})
    index = {p: i for i, p in enumerate(images)}
    halves = {h: Half(h, args.root, index) for h in HALVES}
    runner = Runner(args.root, images, Cache(args.out / "cv", images))
    print(f"{len(images)} images; " + "; ".join(
        f"half {h}: {len(x.images)} images, {int(x.same.sum()):,} genuine / {int((~x.same).sum()):,} impostor pairs "
        f"(FMR resolution {1 / (~x.same).sum():.1e})" for h, x in halves.items()))
    print(f"machine: {os.cpu_count()} cores; " + ", ".join(f"{k} {v}" for k, v in versions().items()))

    def per_half(t: dict[str, np.ndarray], scores_fn=None) -> dict[str, dict]:
        return {h: x.metrics(scores_fn(x) if scores_fn else x.scores(t["vectors"]), t["causes"]) for h, x in halves.items()}

    results: dict[str, object] = {"choices": {}, "candidates": {}, "identification": {}}
    head = "".join(f"| {h} TAR@1e-3 | {h} TAR@1e-4 | {h} EER | {h} FTA images (no face/ambiguous/other) " for h in HALVES)
    print("\n### Pipeline choices: picked on one half, reported on the other\n")
    print(f"| choice | option {head}|")
    print("|---|---|" + "---:|" * 8)
    ref = per_half(runner.reference())
    print(f"| reference | OpenCV YuNet+SFace | {fmt(ref['A'])} | {fmt(ref['B'])} |")
    results["reference"] = ref
    for choice, options in CHOICES.items():
        measured = []
        for label, cfg, plain in options:
            m = per_half(runner.templates(cfg))
            measured.append((label, plain, m))
            print(f"| {choice} | {label} | {fmt(m['A'])} | {fmt(m['B'])} |")
        results["choices"][choice] = {"options": {lab: m for lab, _, m in measured}, **cross_validate(measured)}

    # Accurate-mode candidates: SFace ⊕ dlib ResNet at weight w (w = 1: SFace alone).
    sface, dlib = runner.templates(DEFAULT), runner.templates(DEFAULT, "dlib")
    weights = {f"w={w:g}" + (" (SFace alone)" if w == 1 else " (dlib alone)" if w == 0 else ""): w
               for w in (1.0, 0.7, 0.6, 0.5, 0.4, 0.3, 0.0)}
    fusion = [(label, w == 1, per_half({**sface, "vectors": fused(sface["vectors"], dlib["vectors"], w)}))
              for label, w in weights.items()]
    w_acc = weights[cross_validate(fusion)["decision"]]
    sface_tta = runner.templates(Config(tta=True))
    tta = [(f"w={w_acc:g}, SFace part {label}", label == "without flip TTA",
            per_half({**sface, "vectors": fused(t["vectors"], dlib["vectors"], w_acc)}))
           for label, t in (("without flip TTA", sface), ("with flip TTA", sface_tta))]
    beta = []
    for b in (0.0, 0.05, 0.1, 0.2):
        beta.append((f"beta={b:g}", b == 0, per_half(sface, lambda x, b=b: quality_scores(x, x.scores(sface["vectors"]),
                                                                                         sface["eye"], b))))
    print("\n### Accurate-mode candidates\n")
    print(f"| candidate | option {head}|")
    print("|---|---|" + "---:|" * 8)
    for name, opts in (("SFace + dlib fusion weight", fusion), ("accurate mode, flip TTA", tta),
                       ("quality-aware normalisation (SFace)", beta)):
        for label, _, m in opts:
            print(f"| {name} | {label} | {fmt(m['A'])} | {fmt(m['B'])} |")
        results["candidates"][name] = {"options": {lab: m for lab, _, m in opts}, **cross_validate(opts)}

    print("\n### Cross-validated decisions (pick on one half, figures on the other)\n")
    print("| choice | picked on A -> on B: TAR@1e-3 / 1e-4 | picked on B -> on A: TAR@1e-3 / 1e-4 | decision |")
    print("|---|---|---|---|")
    for group in ("choices", "candidates"):
        for choice, r in results[group].items():
            cells = [f"{p['picked']} -> {p['metrics']['tar@1e-3']:.4f} / {p['metrics']['tar@1e-4']:.4f}"
                     for p in r["picks"].values()]
            verdict = r["decision"] + (" (default kept)" if r["default_kept"] else " (default changed/reverted)")
            print(f"| {choice} | {cells[0]} | {cells[1]} | {verdict} |")

    # 1:N with one vs three templates per subject.
    print("\n### 1:N search, 1 vs 3 templates per subject (per half)\n")
    print("| model | templates | half A rank-1 | half A FNIR@FPIR1% | half B rank-1 | half B FNIR@FPIR1% |")
    print("|---|---:|---:|---:|---:|---:|")
    with_tta = results["candidates"]["accurate mode, flip TTA"]["decision"].endswith("with flip TTA")
    accurate = fused((sface_tta if with_tta else sface)["vectors"], dlib["vectors"], w_acc)
    for model, vec in (("SFace", sface["vectors"]), (f"accurate (w={w_acc:g}, SFace flip TTA {with_tta})", accurate),
                       ("OpenCV reference", runner.reference()["vectors"])):
        for k in (1, 3):
            r = {h: identification(x, vec, k) for h, x in halves.items()}
            results["identification"][f"{model}, {k} templates"] = r
            print(f"| {model} | {k} | {r['A']['rank1']:.4f} | {r['A']['fnir@fpir1%']:.4f} | "
                  f"{r['B']['rank1']:.4f} | {r['B']['fnir@fpir1%']:.4f} |")

    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cv.json").write_text(json.dumps({"versions": versions(), "cores": os.cpu_count(),
                                                  "date": time.strftime("%Y-%m-%d %H:%M:%S"), **results}, indent=2))
    print(f"\nwrote {args.out / 'cv.json'} ({time.time() - t0:.0f} s)")


if __name__ == "__main__":
    main()
