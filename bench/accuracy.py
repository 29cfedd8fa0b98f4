"""Verification accuracy of facegate vs its peers on the same labelled pairs, in one run.

    nice -n 10 .venv/bin/python bench/accuracy.py                 # all 64,702 dev pairs, ~4 min on 2 cores
    nice -n 10 .venv/bin/python bench/accuracy.py --arcface       # + ArcFace-MBF (non-commercial weights)
    nice -n 10 .venv/bin/python bench/accuracy.py --tta           # + facegate with flip_tta=True
    nice -n 10 .venv/bin/python bench/accuracy.py --accurate      # + facegate's accurate mode (SFace + dlib ResNet)

Every image of the pairs file is embedded once per pipeline (facegate through
``FaceEngine.embed_many``, the peers through their own per-image call, see bench/peers.py);
pairs are scored by cosine similarity and evaluated with ``facegate.evaluation``: TAR at FMR
1e-3 and 1e-4, EER, failure to acquire (FTA) for images and pairs, the images' FTA split by
cause (no face / ambiguous subject / other: decode, too many faces; the peers only ever report
"no face"). A pair with an image without a usable face counts as a rejection (a false non-match
when genuine). Prints a
markdown table, then a second one over every cross-identity pair of the same images (about 3.4×
the listed impostors: FMR 1e-4 then rests on ~20 impostor pairs instead of 5, so it is the
steadier comparison at that operating point), and writes bench/out/accuracy.json and bench/out/accuracy_det.png (DET curves
of every pipeline). Nothing is cached.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import DlibPipeline, FacegatePipeline, OpenCVReference, source_state, versions  # noqa: E402

FTA_CAUSES = ("no_face", "ambiguous", "other")

from facegate.evaluation import all_impostor_pairs, evaluate, plot_det, read_pairs, score_pairs  # noqa: E402

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-dev"
OUT = Path(__file__).resolve().parent / "out"
FMRS = (1e-3, 1e-4)


def embed_all(name: str, fn, images: list[str], root: Path, *, batch=None) -> tuple[dict[str, np.ndarray | None], float]:
    """Template (or None) per image; prints progress to stderr. Returns (vectors, seconds)."""
    t0 = time.perf_counter()
    vectors: dict[str, np.ndarray | None] = {}
    step = 64
    for start in range(0, len(images), step):
        part = images[start : start + step]
        paths = [root / p for p in part]
        out = batch(paths) if batch else [fn(p) for p in paths]
        vectors.update(zip(part, out))
        if sys.stderr.isatty():
            print(f"\r  {name}: {min(start + step, len(images))}/{len(images)} images", end="", file=sys.stderr, flush=True)
    seconds = time.perf_counter() - t0
    print(f"{chr(13) if sys.stderr.isatty() else ''}  {name}: {len(images)} images in {seconds:.0f} s", file=sys.stderr)
    return vectors, seconds


def raw_euclidean_scores(raw: dict[str, np.ndarray | None], pairs) -> np.ndarray:
    """-‖a−b‖ of unnormalised dlib descriptors (face_recognition's own metric); NaN on FTA."""
    scores = np.full(len(pairs), np.nan)
    for i, (a, b, _) in enumerate(pairs):
        va, vb = raw.get(a), raw.get(b)
        if va is not None and vb is not None:
            scores[i] = -float(np.linalg.norm(va - vb))
    return scores


def fta(result: dict[str, object]) -> str:
    """FTA images by cause, as 'no face / ambiguous / other'."""
    return " / ".join(str(result["fta_by_cause"][c]) for c in FTA_CAUSES)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="directory the pair paths are relative to")
    ap.add_argument("--pairs", type=Path, default=None, help="pairs TSV (default: ROOT/pairs.tsv)")
    ap.add_argument("--arcface", action="store_true", help="also run facegate with arcface-mbf (NON-COMMERCIAL weights)")
    ap.add_argument("--tta", action="store_true", help="also run facegate with flip_tta=True (2 embeddings per face)")
    ap.add_argument("--accurate", action="store_true", help="also run facegate's accurate mode (needs facegate[accurate])")
    ap.add_argument("--dlib-landmarks", type=int, default=5, choices=(5, 68), help="dlib shape predictor (face_recognition "
                                                                                   "default: 5)")
    ap.add_argument("--sample", type=int, default=0, help="a seeded random sample of N pairs (smoke runs; default all)")
    ap.add_argument("--out", type=Path, default=OUT)
    args = ap.parse_args()
    pairs_file = args.pairs or args.root / "pairs.tsv"

    pairs = read_pairs(str(pairs_file))
    if args.sample:
        pairs = random.Random(0).sample(pairs, min(args.sample, len(pairs)))
    images = sorted({p for a, b, _ in pairs for p in (a, b)})
    print(f"{len(pairs):,} pairs ({sum(s for *_, s in pairs):,} genuine) over {len(images)} images from {pairs_file}")
    print(f"machine: {os.cpu_count()} cores; " + ", ".join(f"{k} {v}" for k, v in versions().items()))
    source = source_state()
    print(f"facegate source: {source}")

    pipelines: list[tuple[str, object, object]] = []  # (name, per-image fn, batch fn)
    fg = FacegatePipeline()
    pipelines.append((f"facegate ({fg.engine.model_id})", fg, fg.many))
    if args.tta:
        fg_tta = FacegatePipeline(flip_tta=True)
        pipelines.append((f"facegate ({fg.engine.model_id}, flip_tta=True)", fg_tta, fg_tta.many))
    if args.accurate:
        acc = FacegatePipeline("accurate")
        pipelines.append((f"facegate ({acc.engine.model_id}, accurate mode)", acc, acc.many))
    if args.arcface:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mbf = FacegatePipeline("arcface-mbf", allow_noncommercial=True)
        pipelines.append((f"facegate ({mbf.engine.model_id}, non-commercial)", mbf, mbf.many))
    pipelines.append(("OpenCV reference (YuNet + SFace, same weights)", OpenCVReference(), None))
    dlib_pipe = DlibPipeline(landmarks=args.dlib_landmarks)
    dlib_raw: dict[str, np.ndarray | None] = {}

    def dlib_one(path: Path) -> np.ndarray | None:
        raw = dlib_pipe.raw(path)
        dlib_raw[str(Path(path).relative_to(args.root))] = raw
        return None if raw is None else raw / max(float(np.linalg.norm(raw)), 1e-12)

    dlib_name = f"dlib (face_recognition, HOG, {args.dlib_landmarks}-pt, cosine)"
    pipelines.append((dlib_name, dlib_one, None))

    results: dict[str, dict[str, object]] = {}
    all_imp_results: dict[str, dict[str, object]] = {}
    # Only meaningful on the complete pair list (identities = groups joined by genuine pairs).
    all_pairs = [] if args.sample else [p for p in pairs if p[2]] + all_impostor_pairs(pairs)
    curves: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for name, fn, batch in pipelines:
        vectors, seconds = embed_all(name, fn, images, args.root, batch=batch)
        scores, same = score_pairs(vectors, pairs)
        report = evaluate(scores, same, fmrs=FMRS)
        fta_images = sum(v is None for v in vectors.values())
        causes = getattr(fn, "causes", {})
        by_cause = dict.fromkeys(FTA_CAUSES, 0)
        for image, v in vectors.items():
            if v is None:
                by_cause[causes.get(str(args.root / image), "no_face")] += 1
        results[name] = {
            **report.to_dict(),
            "images": len(images),
            "fta_images": fta_images,
            "fta_image_rate": fta_images / len(images),
            "fta_by_cause": by_cause,
            "embed_seconds": round(seconds, 1),
        }
        curves[name] = (scores, same)
        if all_pairs:
            all_imp_results[name] = evaluate(*score_pairs(vectors, all_pairs), fmrs=FMRS).to_dict()
    # face_recognition's own metric on raw descriptors, from the same dlib run (no re-embedding).
    raw_scores = raw_euclidean_scores(dlib_raw, pairs)
    same = np.array([s for *_, s in pairs], dtype=bool)
    raw_name = f"dlib (face_recognition, HOG, {args.dlib_landmarks}-pt, -euclidean raw)"
    rep = evaluate(raw_scores, same, fmrs=FMRS)
    results[raw_name] = {**rep.to_dict(), "images": len(images), "fta_images": results[dlib_name]["fta_images"],
                         "fta_image_rate": results[dlib_name]["fta_image_rate"],
                         "fta_by_cause": results[dlib_name]["fta_by_cause"], "embed_seconds": None}
    curves[raw_name] = (raw_scores, same)

    print(f"\n### Accuracy on {pairs_file.name}: {len(pairs):,} pairs, {len(images)} images "
          f"(FMR resolution {1 / rep.impostor:.1e}; FTA counts as rejection)\n")
    print("| pipeline | TAR@FMR1e-3 | TAR@FMR1e-4 | EER | FTA images | no face / ambiguous / other | FTA pairs |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, r in results.items():
        tar = r["tar_at_fmr"]
        print(f"| {name} | {tar['0.001']:.4f} | {tar['0.0001']:.4f} | {r['eer']:.4f} | "
              f"{r['fta_images']}/{r['images']} ({r['fta_image_rate']:.2%}) | {fta(r)} | {r['fta_rate']:.2%} |")

    n_imp = len(all_pairs) - sum(s for *_, s in all_pairs)
    if all_pairs:
        print(f"\n### Same embeddings, every cross-identity pair as impostor: {n_imp:,} impostor pairs "
              f"(FMR resolution {1 / n_imp:.1e})\n")
        print("| pipeline | TAR@FMR1e-3 | TAR@FMR1e-4 | EER | FTA images: no face / ambiguous / other |")
        print("|---|---:|---:|---:|---:|")
    for name, r in all_imp_results.items():
        tar = r["tar_at_fmr"]
        print(f"| {name} | {tar['0.001']:.4f} | {tar['0.0001']:.4f} | {r['eer']:.4f} | {fta(results[name])} |")

    args.out.mkdir(parents=True, exist_ok=True)
    det = args.out / "accuracy_det.png"
    plot_det(curves, str(det), title=f"DET — {pairs_file.name} ({len(pairs):,} pairs)")
    (args.out / "accuracy.json").write_text(json.dumps({
        "pairs_file": str(pairs_file), "pairs": len(pairs), "images": len(images), "versions": versions(), "source": source,
        "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M:%S"), "results": results,
        "results_all_impostors": all_imp_results, "det_png": str(det),
    }, indent=2))
    print(f"\nwrote {args.out / 'accuracy.json'} and {det}")


if __name__ == "__main__":
    main()
