"""Speed of facegate vs its peers: detect + align + embed, per image and in batches.

    nice -n 10 .venv/bin/python bench/speed.py            # ~3 min on an idle 2-core machine
    nice -n 10 .venv/bin/python bench/speed.py --quick    # ~1 min smoke run

Measures, in one run and interleaved (every round runs every pipeline, in rotating order, so a
noisy shared machine slows them alike):

- **single**: median wall ms per image for one call path -> template, warm (facegate:
  ``FaceEngine.embed``; peers: their pipeline call), over ``--single`` dev photos x rounds.
- **batch**: faces/s over ``--images`` dev photos (facegate: ``FaceEngine.embed_many``; peers:
  their natural loop; the OpenCV reference also on a 2-thread pool, and its best variant is the
  one compared against). CPU seconds per face (all threads) is printed as a noise-robust
  measure of work: on a machine loaded by other work, compare modes by it, not by wall time.

Every facegate mode runs side by side: default (SFace), flip TTA, and the accurate mode (SFace
fused with dlib's ResNet; needs ``facegate[accurate]``).

Photos are sampled (seeded) from the images of pairs.tsv, keeping only those where *every*
pipeline acquires a face, so each pipeline does the same work per image (one detection, one
template); how many each acquires is reported too. Results go to bench/out/speed.json.
Targets: single >= as fast as the OpenCV reference; batch >= 1.5x the reference and
>= 3x dlib.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2

sys.path.insert(0, str(Path(__file__).resolve().parent))
from peers import DlibPipeline, FacegatePipeline, OpenCVReference, source_state, versions  # noqa: E402

DEFAULT_ROOT = Path(__file__).resolve().parents[2] / "shared" / "data" / "faces-dev"
OUT = Path(__file__).resolve().parent / "out"


def machine() -> dict[str, object]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    return {
        "cpu": model or platform.processor(),
        "logical_cores": os.cpu_count(),
        "usable_cores": usable,
        "cv2_threads": cv2.getNumThreads(),
        "platform": platform.platform(),
        "loadavg_start": [round(x, 2) for x in os.getloadavg()],
    }


def dev_images(root: Path, n: int, seed: int) -> list[Path]:
    names: set[str] = set()
    with open(root / "pairs.tsv", encoding="utf-8") as fh:
        for line in fh:
            cols = line.rstrip("\n").split("\t")
            if len(cols) == 3 and cols[2] in ("0", "1"):
                names.update(cols[:2])
    chosen = sorted(names)
    random.Random(seed).shuffle(chosen)
    return [root / p for p in chosen[:n]]


class RefPool:
    """The OpenCV reference on a thread pool, one detector/recognizer per thread."""

    def __init__(self, workers: int, cv2_threads: int | None) -> None:
        self.workers = workers
        self.cv2_threads = cv2_threads
        self.local = threading.local()
        self.pool = ThreadPoolExecutor(workers)

    def _one(self, path: Path):
        ref = getattr(self.local, "ref", None)
        if ref is None:
            ref = self.local.ref = OpenCVReference()
        return ref(path)

    def many(self, paths: list[Path]):
        before = cv2.getNumThreads()
        if self.cv2_threads is not None:
            cv2.setNumThreads(self.cv2_threads)
        try:
            return list(self.pool.map(self._one, paths))
        finally:
            cv2.setNumThreads(before)


def timed(fn, *args):
    w, c = time.perf_counter(), time.process_time()
    out = fn(*args)
    return out, time.perf_counter() - w, time.process_time() - c


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="faces-dev directory (with pairs.tsv)")
    ap.add_argument("--images", type=int, default=200, help="photos sampled for the batch figure")
    ap.add_argument("--single", type=int, default=30, help="photos (of those) timed one call at a time")
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seed", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="80 photos, 30 single, 2 rounds")
    ap.add_argument("--out", type=Path, default=OUT / "speed.json")
    args = ap.parse_args()
    if args.quick:
        args.images, args.single, args.rounds = 80, 30, 2

    info = machine()
    info["versions"] = versions()
    info["source"] = source_state()
    print(f"machine: {info['cpu']} — {info['usable_cores']} usable cores (of {info['logical_cores']}), "
          f"cv2 threads {info['cv2_threads']}, load avg {info['loadavg_start']}")
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))
    print(f"facegate source: {info['source']}")

    facegate = FacegatePipeline()
    # The same engine without flip test-time augmentation (one embedding per face, not two).
    facegate1 = FacegatePipeline(flip_tta=False) if getattr(facegate.engine, "flip_tta", False) else None
    modes = {"facegate flip_tta=True": FacegatePipeline(flip_tta=True), "facegate accurate": FacegatePipeline("accurate")}
    ref = OpenCVReference()
    dlib_ = DlibPipeline()
    workers = info["usable_cores"] or 1
    ref_pool = RefPool(workers, None)
    ref_pool1 = RefPool(workers, 1)
    singles = {"facegate": facegate, "opencv-ref": ref, "dlib": dlib_}
    if facegate1 is not None:
        singles["facegate flip_tta=False"] = facegate1
    singles.update(modes)

    # Acquisition pass (also the warm-up): which photos does every pipeline get a face from?
    paths = dev_images(args.root, args.images, args.seed)
    acquired = {}
    for name, fn in singles.items():
        acquired[name] = {p for p in paths if fn(p) is not None}
    facegate.many(paths[:8]), ref_pool.many(paths[:8]), ref_pool1.many(paths[:8])
    if facegate1 is not None:
        facegate1.many(paths[:8])
    for mode in modes.values():
        mode.many(paths[:8])
    common = [p for p in paths if all(p in acquired[k] for k in ("facegate", "opencv-ref", "dlib"))]
    print(f"photos: {len(paths)} sampled from {args.root}/pairs.tsv; faces acquired: "
          + ", ".join(f"{k} {len(v)}" for k, v in acquired.items())
          + f"; timed on the {len(common)} where all three acquire one")

    # --- single image, warm ----------------------------------------------------------------
    single_set = common[: args.single]
    per_image: dict[str, list[float]] = {k: [] for k in singles}
    order = list(singles)
    for r in range(args.rounds):
        for i, p in enumerate(single_set):
            k = (r + i) % len(order)
            for name in order[k:] + order[:k]:
                t = time.perf_counter()
                singles[name](p)
                per_image[name].append((time.perf_counter() - t) * 1000)
    single = {k: {"median_ms": statistics.median(v), "p10_ms": sorted(v)[len(v) // 10],
                  "p90_ms": sorted(v)[(len(v) * 9) // 10], "samples": len(v)} for k, v in per_image.items()}

    # --- batch -----------------------------------------------------------------------------
    variants = {
        "facegate embed_many": facegate.many,
        "facegate embed loop": lambda ps: [facegate(p) for p in ps],
        **({"facegate flip_tta=False embed_many": facegate1.many} if facegate1 is not None else {}),
        **{f"{name} embed_many": mode.many for name, mode in modes.items()},
        "opencv-ref loop": lambda ps: [ref(p) for p in ps],
        f"opencv-ref pool{workers}": ref_pool.many,
        f"opencv-ref pool{workers} cv2x1": ref_pool1.many,
        "dlib loop": lambda ps: [dlib_(p) for p in ps],
    }
    runs: dict[str, list[dict[str, float]]] = {k: [] for k in variants}
    names = list(variants)
    for r in range(args.rounds):
        k = r % len(names)
        for name in names[k:] + names[:k]:
            out, wall, cpu = timed(variants[name], common)
            faces = sum(v is not None for v in out)
            runs[name].append({"faces": faces, "wall_s": wall, "cpu_s": cpu, "faces_per_s": faces / wall})
        print(f"  round {r + 1}/{args.rounds} done (load avg {os.getloadavg()[0]:.2f})", file=sys.stderr)
    batch = {
        k: {
            "faces": v[0]["faces"],
            "faces_per_s": statistics.median(x["faces_per_s"] for x in v),
            "ms_per_face": statistics.median(1000 * x["wall_s"] / x["faces"] for x in v),
            "cpu_ms_per_face": statistics.median(1000 * x["cpu_s"] / x["faces"] for x in v),
            "rounds": v,
        }
        for k, v in runs.items()
    }
    ref_variants = [k for k in batch if k.startswith("opencv-ref")]
    best_ref = max(ref_variants, key=lambda k: batch[k]["faces_per_s"])

    def round_ratio(a: str, b: str, key: str = "wall_s") -> float:  # same-round ratios, then their median
        return statistics.median(y[key] / y["faces"] / (x[key] / x["faces"]) for x, y in zip(runs[a], runs[b]))

    def targets(fg_single: str, fg_batch: str) -> dict[str, tuple]:
        """name -> (facegate, peer, ratio of medians, median of same-round ratios, needed, CPU ratio)."""
        tag = "" if fg_single == "facegate" else " (flip_tta=False)"
        out = {}
        for peer, need in (("opencv-ref", 1.0), ("dlib", 3.0)):
            a, b = single[fg_single]["median_ms"], single[peer]["median_ms"]
            out[f"single{tag}: >= {need:g}x {peer}"] = (a, b, b / a, None, need, None)
        for peer, need in ((best_ref, 1.5), ("dlib loop", 3.0)):
            a, b = batch[fg_batch]["faces_per_s"], batch[peer]["faces_per_s"]
            out[f"batch{tag}: >= {need:g}x {peer}"] = (a, b, a / b, round_ratio(fg_batch, peer), need,
                                                       round_ratio(fg_batch, peer, "cpu_s"))
        return out

    checks = targets("facegate", "facegate embed_many")
    if facegate1 is not None:
        checks.update(targets("facegate flip_tta=False", "facegate flip_tta=False embed_many"))

    info["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"\n### Single image, warm (median of {len(single_set)} photos x {args.rounds} rounds)\n")
    print("| pipeline | median ms/image | p10 | p90 |")
    print("|---|---:|---:|---:|")
    for k, v in single.items():
        print(f"| {k} | {v['median_ms']:.1f} | {v['p10_ms']:.1f} | {v['p90_ms']:.1f} |")
    print(f"\n### Batch of {len(common)} photos (median of {args.rounds} rounds)\n")
    print("| pipeline | faces/s | wall ms/face | CPU ms/face (all threads) |")
    print("|---|---:|---:|---:|")
    for k, v in batch.items():
        mark = " (best reference)" if k == best_ref else ""
        print(f"| {k}{mark} | {v['faces_per_s']:.1f} | {v['ms_per_face']:.1f} | {v['cpu_ms_per_face']:.1f} |")
    print("\n### Targets\n")
    print("single: median ms/image; batch: faces/s. Speed-up = ratio of those medians; per-round = median of "
          "the same-round ratios; PASS needs both. CPU = peer's CPU time per face / facegate's (all threads; "
          "insensitive to other load on the machine).\n")
    print("| target | facegate | peer | speed-up | per-round | needed | | CPU |")
    print("|---|---:|---:|---:|---:|---:|---|---:|")
    verdicts = {}
    for k, (a, b, ratio, per_round, need, cpu_ratio) in checks.items():
        ok = ratio >= need and (per_round is None or per_round >= need)
        verdicts[k] = {"facegate": a, "peer": b, "speedup": ratio, "per_round_speedup": per_round, "needed": need,
                       "pass": ok, "cpu_ratio": cpu_ratio}
        fmt = lambda v: f"{v:.2f}x" if v is not None else ""  # noqa: E731
        print(f"| {k} | {a:.1f} | {b:.1f} | {ratio:.2f}x | {fmt(per_round)} | {need:g}x | "
              f"{'PASS' if ok else 'FAIL'} | {fmt(cpu_ratio)} |")
    print(f"\nload avg at start {info['loadavg_start']}, at end {info['loadavg_end']}")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({
        "machine": info, "photos_sampled": len(paths), "photos_timed": len(common),
        "acquired": {k: len(v) for k, v in acquired.items()}, "rounds": args.rounds, "seed": args.seed,
        "single": single, "batch": batch, "best_reference_batch": best_ref, "targets": verdicts,
    }, indent=2, default=str))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
