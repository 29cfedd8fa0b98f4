"""What the enrolment same-person rule (``face_mismatch``) costs genuine users, and what it stops.

    nice -n 10 .venv/bin/python bench/reenrol.py            # faces-dev, collection at FMR 1e-4
    nice -n 10 .venv/bin/python bench/reenrol.py --fmr 1e-3

Genuine: for each identity of faces-dev, enrol its first usable photo as a new subject of a real
gallery (temporary SQLite store), then add each of its other photos, one ``Gallery.enroll`` call
each, as a re-enrolment would; the subject's templates grow with every accepted photo. The
refusal rate is face_mismatch refusals / attempts (photos that passed the quality gate and were
neither a near copy nor over the template limit).

Impostor: every photo of another identity of the same half offered to each subject's first
template (the rule's score when the subject holds one template): accepted when the cosine is at
or above the collection's threshold. Templates from ``FaceEngine.embed``, one per image.

Reported per identity-disjoint half (splits/identities_A.txt, identities_B.txt) and overall;
writes bench/out/reenrol.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-dev"
OUT = Path(__file__).resolve().parent / "out"
COUNTED = (None, "face_mismatch")  # outcomes where the same-person rule decided


def identities(root: Path) -> dict[str, list[str]]:
    by_id: dict[str, list[str]] = defaultdict(list)
    with open(root / "MANIFEST.tsv", newline="") as f:
        for row in csv.DictReader(f, delimiter="\t"):
            by_id[row["identity"]].append(row["path"])
    return dict(by_id)


def halves(root: Path) -> dict[str, str]:
    out = {}
    for half in ("A", "B"):
        for line in (root / "splits" / f"identities_{half}.txt").read_text().split():
            out[line] = half
    return out


def genuine(g, by_id: dict[str, list[str]], root: Path) -> dict[str, dict[str, int]]:
    """Per identity: attempts, refusals (face_mismatch), other rejections; first template kept."""
    from facegate.gallery import ConsentSpec

    consent = ConsentSpec(["bench"], evidence_ref="bench")
    stats: dict[str, dict[str, int]] = {}
    for n, (ident, paths) in enumerate(sorted(by_id.items()), 1):
        s = stats[ident] = {"attempts": 0, "refused": 0, "other_rejections": 0, "enrolled": 0}
        for p in paths:
            first = not s["enrolled"]
            res = g.enroll("dev", ident, [str(root / p)], consent=consent if first else None, actor="bench")
            o = res.images[0]
            if first:
                s["enrolled"] = int(o.accepted)
                continue
            if o.reason in COUNTED:
                s["attempts"] += 1
                s["refused"] += o.reason == "face_mismatch"
            else:
                s["other_rejections"] += 1
        print(f"\r  genuine: {n}/{len(by_id)} identities", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return stats


def impostor(engine, by_id: dict[str, list[str]], root: Path, half_of: dict[str, str], thr: float) -> dict[str, list[int]]:
    """Per half: [attempts, accepted] over (subject's first template, other identity's photo)."""
    vec: dict[str, np.ndarray] = {}
    paths = [p for ps in by_id.values() for p in ps]
    for p, e in zip(paths, engine.embed_many([str(root / p) for p in paths])):
        if not isinstance(e, Exception):
            vec[p] = e.vector.astype(np.float32)
    out: dict[str, list[int]] = {"A": [0, 0], "B": [0, 0]}
    for half in out:
        ids = [i for i in by_id if half_of.get(i) == half]
        first = {i: next((vec[p] for p in by_id[i] if p in vec), None) for i in ids}
        for i in ids:
            if first[i] is None:
                continue
            others = np.array([vec[p] for j in ids if j != i for p in by_id[j] if p in vec])
            if len(others):
                scores = others @ first[i]
                out[half][0] += len(scores)
                out[half][1] += int((scores >= thr).sum())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT)
    ap.add_argument("--fmr", type=float, default=1e-4)
    args = ap.parse_args()
    from facegate import FaceEngine
    from facegate.gallery import Gallery

    by_id = identities(args.root)
    half_of = halves(args.root)
    engine = FaceEngine()
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, Gallery.open(Path(tmp) / "g", engine=engine) as g:
        col = g.create_collection("dev", purposes=["bench"], fmr=args.fmr)
        gen = genuine(g, by_id, args.root)
        thr = col.threshold
    imp = impostor(engine, by_id, args.root, half_of, thr)
    rows = {}
    for half in ("A", "B", "all"):
        ids = [i for i in gen if half == "all" or half_of.get(i) == half]
        att = sum(gen[i]["attempts"] for i in ids)
        ref = sum(gen[i]["refused"] for i in ids)
        ia, ik = (sum(v[0] for v in imp.values()), sum(v[1] for v in imp.values())) if half == "all" else imp[half]
        rows[half] = {"identities": len(ids), "genuine_attempts": att, "genuine_refused": ref,
                      "genuine_refusal_rate": ref / att if att else None,
                      "other_rejections": sum(gen[i]["other_rejections"] for i in ids),
                      "impostor_attempts": ia, "impostor_accepted": ik, "impostor_accept_rate": ik / ia if ia else None}
    report = {"fmr": args.fmr, "threshold": thr, "seconds": round(time.perf_counter() - t0, 1), "halves": rows}
    OUT.mkdir(exist_ok=True)
    (OUT / "reenrol.json").write_text(json.dumps(report, indent=2))
    print(f"collection FMR {args.fmr:g}, threshold {thr:.4f}, {report['seconds']:.0f} s")
    print("| half | identities | genuine refused / attempts | refusal rate | impostor accepted / attempts | accept rate |")
    print("|---|---|---|---|---|---|")
    for half, r in rows.items():
        gr = "n/a" if r["genuine_refusal_rate"] is None else f"{r['genuine_refusal_rate']:.2%}"
        ir = "n/a" if r["impostor_accept_rate"] is None else f"{r['impostor_accept_rate']:.2e}"
        print(f"| {half} | {r['identities']} | {r['genuine_refused']} / {r['genuine_attempts']} | {gr} | "
              f"{r['impostor_accepted']} / {r['impostor_attempts']} | {ir} |")


if __name__ == "__main__":
    main()
