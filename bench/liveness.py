"""Liveness attack suite: APCER per attack type and BPCER on genuine captures (ISO/IEC 30107-3 terms).

    .venv/bin/python bench/liveness.py [--quick] [--out bench/results/liveness.json]

APCER = share of attack presentations decided *live*; BPCER = share of genuine presentations
decided *not live*. Data (nothing from the dev set is copied anywhere):

- Genuine, natural motion: the public-domain clip ../shared/data/videos/miranda_whitehouse.mp4,
  its single-face shot (frames 82–210, 4.3 s), cut into overlapping 2 s and 3 s windows sampled at
  10 fps (3 sampling phases); section ``fps``: 2 s windows at 30, 15, 5, 3 fps and with half the
  frames dropped at random. It is a performance, not a challenge response: it measures the
  passive checks (one face, one identity, natural change, quality) — ``challenges=[]``.
- Genuine, assembled: per dev-set identity, real photos at neutral / turned / up / down poses
  (picked with head_pose relative to the identity's frontal photos) placed on one canvas, held 3
  frames each at 5 fps: neutral, pose 1, neutral, pose 2, … (move_closer = a neutral photo
  zoomed 1.45×). Photos repeated and cut together are not a video, so these measure the
  challenge order/timing/pose logic with the natural-change checks off; the same sequences with
  jitter under the full checks are the "photo sequence" attack.
- Attacks from real photos (tests/data and dev-set frontal photos): one photo repeated, the photo
  with hand jitter, the photo tilted/moved to imitate each challenge (perspective warps), two
  people spliced (victim's neutral photo + another person's poses; victim's photo + the clip's
  real motion), right poses in the wrong order, the right poses with a half-way photo out and
  back (with and without ``picture_cut``), replay of an earlier session's frames under a new
  session (verbatim and re-encoded), frames stamped before the session, frames after expiry.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import json
import os
import sys
import time
from pathlib import Path

import cv2
import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from facegate.engine import FaceEngine  # noqa: E402
from facegate.errors import FacegateError  # noqa: E402
from facegate.liveness import (  # noqa: E402
    Challenge,
    Frame,
    InMemorySessionStore,
    LivenessChecker,
    LivenessConfig,
    SessionExpiredError,
    create_session,
    random_challenges,
)
from facegate.liveness.challenge import MAX_CHALLENGES, MIN_CHALLENGES  # noqa: E402
from facegate.liveness.flow import SubmittedFrame, submit_frames  # noqa: E402
from facegate.liveness.synthetic import assemble, on_canvas, photo_following, still_frames  # noqa: E402
from facegate.vision import decode  # noqa: E402

SHARED = (ROOT / ".." / "shared" / "data").resolve()
CLIP = SHARED / "videos" / "miranda_whitehouse.mp4"
DEV = SHARED / "faces-dev" / "images"
TEST_PHOTOS = sorted((ROOT / "tests" / "data").glob("*.jpg"))
SHOT = (82, 210)  # the clip's single-face shot (frame indices at 29.97 fps)


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


# --- data ---------------------------------------------------------------------------------------


def clip_frames() -> list[np.ndarray]:
    cap = cv2.VideoCapture(str(CLIP))
    out = []
    while True:
        ok, bgr = cap.read()
        if not ok:
            break
        out.append(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB))
    cap.release()
    return out


def clip_windows(frames: list[np.ndarray], lengths=(2.0, 3.0), hop_s=0.5, fps_in=29.97, step=3) -> list[tuple[str, list[Frame]]]:
    lo, hi = SHOT
    out = []
    for length in lengths:
        span = int(round(length * fps_in))
        for phase in range(step):
            start = lo + phase
            while start + span <= hi + 1:
                idx = list(range(start, start + span, step))
                out.append((f"{length:.0f}s@{start}", [Frame(frames[i], (i - idx[0]) / fps_in) for i in idx]))
                start += int(round(hop_s * fps_in))
    return out


def small(rgb: np.ndarray, side: int = 640) -> np.ndarray:
    s = side / max(rgb.shape[:2])
    return cv2.resize(rgb, None, fx=s, fy=s, interpolation=cv2.INTER_AREA) if s < 1 else rgb


def dev_poses(engine: FaceEngine, limit_ids: int | None) -> dict[str, dict[str, list[np.ndarray]]]:
    """identity -> {"neutral": [...], "turn_left": [...], ...} canvas-normalised photos."""
    by_id: dict[str, list[Path]] = collections.defaultdict(list)
    for p in sorted(DEV.glob("*/*.jpg")):
        by_id[p.parent.name].append(p)
    out: dict[str, dict[str, list[np.ndarray]]] = {}
    for ident, paths in sorted(by_id.items()):
        if len(paths) < 5:
            continue
        rows = []
        for p in paths:
            try:
                rgb = small(decode(p))
                faces = engine.detect(rgb)
            except FacegateError:
                continue
            if len(faces) != 1:  # a webcam capture has one face; group photos are not one
                continue
            # classify on the canvas the checker will see (resampling moves the landmarks)
            canvas = on_canvas(rgb, np.asarray(faces[0].landmarks))
            seen = engine.detect(canvas)
            if len(seen) != 1:
                continue
            rows.append((rgb, faces[0], canvas, seen[0]))
        frontal = [(c.quality.yaw_deg, c.quality.pitch_deg) for _, _, _, c in rows if abs(c.quality.yaw_deg) <= 10]
        if len(frontal) < 2:
            continue
        ymed = float(np.median([y for y, _ in frontal]))
        pmed = float(np.median([p for _, p in frontal]))
        poses: dict[str, list[np.ndarray]] = collections.defaultdict(list)
        for rgb, f, canvas, c in rows:
            q = c.quality
            dy, dp = q.yaw_deg - ymed, q.pitch_deg - pmed
            if abs(dy) <= 4 and abs(dp) <= 2:
                poses["neutral"].append(canvas)
                poses["move_closer"].append(on_canvas(rgb, np.asarray(f.landmarks), zoom=1.6))
            elif 28 <= dy <= 60 and abs(dp) <= 6:
                poses["turn_left"].append(canvas)
            elif -60 <= dy <= -28 and abs(dp) <= 6:
                poses["turn_right"].append(canvas)
            elif dp >= 9.5 and abs(dy) <= 8:
                poses["look_up"].append(canvas)
            elif dp <= -9.5 and abs(dy) <= 8:
                poses["look_down"].append(canvas)
            # half-way poses (transition band), for the photo-sequence attack with ramps
            if 12 <= dy <= 18 and abs(dp) <= 3:
                poses["half_turn_left"].append(canvas)
            elif -18 <= dy <= -12 and abs(dp) <= 3:
                poses["half_turn_right"].append(canvas)
            elif 4.5 <= dp <= 7.5 and abs(dy) <= 5:
                poses["half_look_up"].append(canvas)
            elif -7.5 <= dp <= -4.5 and abs(dy) <= 5:
                poses["half_look_down"].append(canvas)
        if poses.get("neutral"):
            poses["half_move_closer"] = [on_canvas(rgb, np.asarray(f.landmarks), zoom=1.22)
                                         for rgb, f, _, c in rows if abs(c.quality.yaw_deg - ymed) <= 5][:2]
        moves = [k for k, v in poses.items() if v and not k.startswith("half_") and k not in ("neutral", "move_closer")]
        if len(poses["neutral"]) >= 2 and moves:
            out[ident] = dict(poses)
        if limit_ids and len(out) >= limit_ids:
            break
    return out


def sequences_for(available: set[str], rng: np.random.Generator, k: int) -> list[list[Challenge]]:
    kinds = [c for c in Challenge if c.value in available]
    if len(kinds) < 2:
        return []
    seqs, tries = [], 0
    while len(seqs) < k and tries < 200:
        tries += 1
        n = int(rng.integers(MIN_CHALLENGES, MAX_CHALLENGES + 1))
        seq: list[Challenge] = []
        for _ in range(n):
            choices = [c for c in kinds if not seq or c is not seq[-1]]
            seq.append(choices[int(rng.integers(len(choices)))])
        if seq not in seqs:
            seqs.append(seq)
    return seqs


def other_order(seq: list[Challenge]) -> list[Challenge] | None:
    for perm in itertools.permutations(seq):
        p = list(perm)
        if p != seq and all(a is not b for a, b in zip(p, p[1:])):
            return p
    return None


# --- evaluation ---------------------------------------------------------------------------------


class Tally:
    def __init__(self) -> None:
        self.rows: dict[str, dict] = {}

    def add(self, name: str, kind: str, live: bool, reasons: list[str], note: str = "", metrics: dict | None = None) -> None:
        r = self.rows.setdefault(name, {"kind": kind, "n": 0, "live": 0, "reasons": collections.Counter(), "note": note,
                                        "fits": [], "ref_match": [], "chroma": []})
        if metrics:
            if metrics.get("min_rigid_fit") is not None:
                r["fits"].append(float(metrics["min_rigid_fit"]))
            if metrics.get("max_chroma_jump") is not None:
                r["chroma"].append(float(metrics["max_chroma_jump"]))
            if metrics.get("identity_ref_match_fraction") is not None:
                r["ref_match"].append(float(metrics["identity_ref_match_fraction"]))
        r["n"] += 1
        r["live"] += int(live)
        r["reasons"].update(reasons)
        log(f"  {name}: {'LIVE' if live else 'not live'} {','.join(reasons)}")

    def table(self) -> list[dict]:
        out = []
        for name, r in self.rows.items():
            n = r["n"]
            rate = (r["live"] / n) if r["kind"] == "attack" else ((n - r["live"]) / n)
            out.append({
                "name": name, "kind": r["kind"], "n": n,
                "metric": "APCER" if r["kind"] == "attack" else "BPCER",
                "rate": rate, "errors": r["live"] if r["kind"] == "attack" else n - r["live"],
                "upper95": _upper95(r["live"] if r["kind"] == "attack" else n - r["live"], n),
                "reasons": dict(r["reasons"].most_common()), "note": r["note"],
                "min_rigid_fit": _pcts(r["fits"]), "identity_ref_match_fraction": _pcts(r["ref_match"]),
                "max_chroma_jump": _pcts(r["chroma"]),
            })
        return out


def _jpegs(frames: list[Frame], quality: int) -> list[bytes]:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality]
    return [cv2.imencode(".jpg", cv2.cvtColor(fr.image, cv2.COLOR_RGB2BGR), params)[1].tobytes() for fr in frames]


def _stamped(jpegs: list[bytes], frames: list[Frame], start_s: float) -> list[SubmittedFrame]:
    """The frames as a client submits them, captured from ``start_s`` (Unix seconds) on."""
    return [SubmittedFrame(j, (start_s + fr.t) * 1000) for j, fr in zip(jpegs, frames)]


def _pcts(values: list[float]) -> dict | None:
    if not values:
        return None
    v = np.asarray(values)
    return {"min": float(v.min()), "p5": float(np.percentile(v, 5)), "median": float(np.median(v)),
            "p95": float(np.percentile(v, 95)), "max": float(v.max())}


def _upper95(k: int, n: int) -> float:
    """One-sided 95 % upper bound (Clopper–Pearson; 'rule of three' at k = 0)."""
    if n == 0:
        return float("nan")
    if k == 0:
        return 1 - 0.05 ** (1 / n)
    from math import comb

    lo, hi = k / n, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        cdf = sum(comb(n, i) * mid**i * (1 - mid) ** (n - i) for i in range(k + 1))
        lo, hi = (mid, hi) if cdf > 0.05 else (lo, mid)
    return hi


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="fewer trials (a smoke run)")
    ap.add_argument("--out", type=Path, default=ROOT / "bench" / "results" / "liveness.json")
    ap.add_argument("--seed", type=int, default=20261126)
    ap.add_argument("--sections", default="calibration,clip,fps,photos,assembled,splice,binding",
                    help="comma-separated subset of: calibration, clip, fps, photos, assembled, splice, binding "
                         "(e.g. --sections assembled: only the assembled-sequence rows)")
    args = ap.parse_args()
    rng = np.random.default_rng(args.seed)
    q = args.quick
    sections = set(args.sections.split(","))
    t_start = time.time()

    engine = FaceEngine()
    full = LivenessChecker(engine)  # production configuration
    logic = LivenessChecker(engine, LivenessConfig(check_motion=False))  # challenge logic + faces + identity
    no_cut = LivenessChecker(engine, LivenessConfig(max_chroma_jump=None))  # all checks but picture_cut (before it existed)
    tally = Tally()
    timings: list[float] = []

    def add_result(name: str, kind: str, r, note: str = "") -> None:
        tally.add(name, kind, r.live, r.reasons, note, r.metrics)

    def run(checker: LivenessChecker, frames: list[Frame], challenges) -> object:
        t = time.perf_counter()
        r = checker.check(frames, challenges)
        timings.append((time.perf_counter() - t) / max(len(frames), 1))
        return r

    clip = clip_frames()
    calibration = pose_calibration(engine, clip) if "calibration" in sections else None

    # -- genuine: natural motion (clip) --------------------------------------------------------
    log("clip windows …")
    windows = clip_windows(clip, lengths=(2.0,) if q else (2.0, 3.0))
    oracle: list[tuple[list[Frame], list[Challenge]]] = []
    for _name, frames in windows if sections & {"clip", "splice", "binding"} else []:
        r = run(full, frames, [])
        add_result("genuine: clip natural motion (passive checks)", "genuine", r,
                  "public-domain clip, real motion, no challenge asked")
        seen = [e.kind for e in r.events]
        # usable as a challenge response only when it starts facing the camera
        if r.live and len(seen) >= 1 and abs(r.metrics.get("baseline_yaw", 90.0)) <= full.config.max_start_yaw:
            oracle.append((frames, seen))
    # the same natural motion at other frame rates and with dropped frames (webcams deliver
    # 10–30 fps and drop frames); passive checks
    lo, hi = SHOT
    drop_rng = np.random.default_rng(args.seed + 1)  # its own stream: the other rows keep their draws
    fps_variants = [("30fps", 1, 1.0), ("15fps", 2, 1.0), ("5fps", 6, 1.0), ("3fps", 10, 1.0),
                    ("30fps-keep50%", 1, 0.5), ("10fps-keep50%", 3, 0.5)]
    for _label, step, keep in fps_variants if "fps" in sections else []:
        span = int(round(2.0 * 29.97))
        start = lo
        while start + span <= hi + 1:
            idx = [i for i in range(start, start + span, step) if keep >= 1.0 or i == start or drop_rng.random() < keep]
            frames = [Frame(clip[i], (i - idx[0]) / 29.97) for i in idx]
            r = run(full, frames, [])
            add_result("genuine: clip natural motion at 3–30 fps / dropped frames (passive checks)", "genuine", r,
                      "2 s windows at 30, 15, 5, 3 fps and with half the frames dropped at random (30 and 10 fps)")
            start += int(round(0.5 * 29.97))
    # the clip as a challenge response: challenges = the movements it happens to contain
    for frames, seen in oracle[: 4 if q else 12] if "clip" in sections else []:
        r = run(full, frames, seen)
        add_result("genuine: clip, challenges = its own movements", "genuine", r,
                  "optimistic: the challenge is chosen after the fact")

    # -- photos ---------------------------------------------------------------------------------
    log("photos …")
    photos: list[tuple[str, np.ndarray]] = [(p.stem, small(decode(p))) for p in TEST_PHOTOS]
    dev_frontal: list[tuple[str, np.ndarray]] = []
    if DEV.is_dir():
        for ident_dir in sorted(DEV.iterdir()):
            for p in sorted(ident_dir.glob("*.jpg")):
                try:
                    rgb = small(decode(p))
                    f = engine.face(rgb)
                except FacegateError:
                    continue
                if abs(f.quality.yaw_deg) <= 10 and f.quality.inter_eye_px >= 30:
                    # put small crops on a webcam-like canvas so the face is a normal size
                    dev_frontal.append((ident_dir.name, on_canvas(rgb, np.asarray(f.landmarks), inter_eye=70)))
                    break
    attack_photos = photos + dev_frontal[: 6 if q else 30]
    log(f"{len(attack_photos)} attack photos")
    for _name, rgb in attack_photos if "photos" in sections else []:
        seq = random_challenges(rng=_Rand(rng))
        r = run(full, still_frames(rgb, 20, rng, move=False), seq)
        add_result("attack: one photo repeated (identical frames)", "attack", r)
        r = run(full, still_frames(rgb, 20, rng), seq)
        add_result("attack: photo with hand jitter", "attack", r, "shift ±4 px, rot ±2°, scale ±2 %, exposure, noise, JPEG")
        for sign in (1.0, -1.0):
            r = run(full, photo_following(rgb, seq, rng, sign=sign, fps=5.0), seq)
            add_result("attack: photo tilted/moved to imitate the challenges", "attack", r,
                      "perspective warps ±40° yaw / ±35° pitch, ×1.5 closer, + jitter; both tilt senses")
            r = run(logic, photo_following(rgb, seq, rng, sign=sign, fps=5.0), seq)
            add_result("attack: photo tilted/moved — challenge logic only", "attack", r,
                      "same, natural-change checks off: does tilting a photo fake the pose?")

    # -- assembled genuine sequences (dev photos) ------------------------------------------------
    identities: dict[str, dict[str, list[np.ndarray]]] = {}
    if DEV.is_dir() and "assembled" in sections:
        log("assembling pose sequences from the dev set …")
        identities = dev_poses(engine, 8 if q else None)
    log(f"{len(identities)} identities with usable poses")
    kinds_used: collections.Counter = collections.Counter()
    ids = sorted(identities)
    for n_id, ident in enumerate(ids):
        poses = identities[ident]
        available = {k for k, v in poses.items() if v and not k.startswith("half_") and k != "neutral"}
        for seq in sequences_for(available, rng, 2 if q else 4):
            kinds_used.update(c.value for c in seq)
            frames = assemble(poses, seq, rng=rng)
            r = run(logic, frames, seq)
            add_result("genuine (assembled): challenge logic", "genuine", r,
                      "ASSEMBLED from real photos of one person; natural-change checks off")
            r = run(full, frames, seq)
            add_result("genuine (assembled): all checks — a photo staircase, not a video", "genuine", r,
                      "ASSEMBLED; informational: the same sequences under every check are still photos shown in "
                      "turn, which abrupt_motion/picture_cut exist to refuse")
            wrong = other_order(seq)
            if wrong is not None:
                r = run(logic, frames, wrong)
                add_result("attack (assembled): right poses, wrong order", "attack", r,
                          "ASSEMBLED; challenge logic only")
                r = run(full, assemble(poses, seq, rng=rng, move=True), wrong)
                add_result("attack (assembled): right poses, wrong order — full checks", "attack", r, "ASSEMBLED")
            r = run(full, assemble(poses, seq, rng=rng, move=True), seq)
            add_result("attack (assembled): photo sequence, right poses, right order", "attack", r,
                      "ASSEMBLED photos of the victim with jitter; full checks")
            if all(poses.get("half_" + c.value) for c in seq):
                halfway = assemble(poses, seq, rng=rng, move=True, ramps=True)
                r = run(full, halfway, seq)
                add_result("attack (assembled): photo sequence with half-way poses", "attack", r,
                          "ASSEMBLED; one half-turned photo on the way out and back; full checks")
                r = run(no_cut, halfway, seq)
                add_result("attack (assembled): photo sequence with half-way poses — without picture_cut", "attack", r,
                          "ASSEMBLED; same frames, every check except picture_cut (the configuration before it)")
            # splice: victim's neutral photos, another person's poses
            others = ids[n_id + 1:] + ids[:n_id]
            other = next((identities[o] for o in others if all(identities[o].get(c.value) for c in seq)), None)
            if other is not None:
                spliced = {"neutral": poses["neutral"], **{c.value: other[c.value] for c in seq}}
                r = run(logic, assemble(spliced, seq, rng=rng), seq)
                add_result("attack (assembled): two people spliced — logic", "attack", r,
                          "ASSEMBLED; victim neutral + other person's poses; natural-change checks off")
                r = run(full, assemble(spliced, seq, rng=rng, move=True), seq)
                add_result("attack (assembled): two people spliced — full checks", "attack", r, "ASSEMBLED")

    # -- splice: victim photo, then real motion of someone else (clip) -------------------------
    log("splices with the clip …")
    h, w = clip[0].shape[:2]
    for _name, rgb in attack_photos[: 4 if q else 12] if "splice" in sections else []:
        try:
            f = engine.face(rgb)
        except FacegateError:
            continue
        canvas = on_canvas(rgb, np.asarray(f.landmarks), inter_eye=38, size=(w, h), eye_centre=(213.0, 100.0))
        for frames, seen in oracle[:2]:
            lead = still_frames(canvas, 10, rng)
            dt = frames[1].t - frames[0].t
            spliced = lead + [Frame(fr.image, lead[-1].t + dt + fr.t) for fr in frames]
            r = run(full, spliced, seen)
            add_result("attack: victim photo, then another person's real motion", "attack", r,
                      "victim photo (jitter) 1 s + clip window; challenges = the clip's own movements")

    # -- session binding: replay, pre-recorded, expiry ------------------------------------------
    log("session binding …")
    replay_sources: list[tuple[list[Frame], list[Challenge]]] = oracle[: 3 if q else 8] if "binding" in sections else []
    for frames, seen in replay_sources:
        jpegs = _jpegs(frames, 90)
        now = time.time()
        # one store per recording: the windows overlap, so one store would (rightly) see replays
        store = InMemorySessionStore()
        a = create_session(seen, now=now - 10)
        store.add(a)
        sub = _stamped(jpegs, frames, now - 8)
        _, ra = submit_frames(store, full, a.id, a.nonce, sub, now=now)
        # verbatim replay into a new session that (worst case) asks the same movements
        b = create_session(a.challenges, now=now + 30)
        store.add(b)
        sub_b = _stamped(jpegs, frames, now + 32)
        _, rb = submit_frames(store, full, b.id, b.nonce, sub_b, now=now + 40)
        add_result("attack: verbatim replay of an earlier session's frames (same challenges)", "attack", rb,
                  "worst case: the new session happens to ask the same movements; timestamps re-stamped")
        # re-encoded replay, same challenges (only the challenge draw protects)
        reenc = _jpegs(frames, 80)
        c = create_session(a.challenges, now=now + 60)
        store.add(c)
        _, rc = submit_frames(store, full, c.id, c.nonce, _stamped(reenc, frames, now + 62), now=now + 70)
        add_result("attack: re-encoded replay, new session asks the same movements", "attack", rc,
                  "digests differ: only the random challenge protects (see draw probability)")
        # re-encoded replay into a session with a random challenge
        d = create_session(now=now + 90)
        store.add(d)
        _, rd = submit_frames(store, full, d.id, d.nonce, _stamped(reenc, frames, now + 92), now=now + 100)
        add_result("attack: re-encoded replay into a new random session", "attack", rd)
        # pre-recorded: original capture times (before the session existed)
        e = create_session(a.challenges, now=now + 3600)
        store.add(e)
        _, re_ = submit_frames(store, full, e.id, e.nonce, _stamped(reenc, frames, now - 8), now=now + 3610)
        add_result("attack: pre-recorded frames with their original timestamps", "attack", re_)
        # after expiry
        x = create_session(a.challenges, now=now, ttl_s=180)
        store.add(x)
        try:
            submit_frames(store, full, x.id, x.nonce, sub, now=now + 181)
            tally.add("attack: frames submitted after expiry", "attack", True, [])
        except SessionExpiredError as exc:
            tally.add("attack: frames submitted after expiry", "attack", False, [exc.code])
        add_result("genuine: clip through a session (binding + checks)", "genuine", ra,
                  "clip window, session asks its own movements; fresh timestamps")

    # chance that a new random session asks exactly the movements of one recording
    draws = collections.Counter(tuple(random_challenges()) for _ in range(20000 if not q else 2000))
    n_seq = sum(4**(n - 1) * 5 for n in range(MIN_CHALLENGES, MAX_CHALLENGES + 1))
    p_same = {n: 1 / 3 / (5 * 4 ** (n - 1)) for n in range(MIN_CHALLENGES, MAX_CHALLENGES + 1)}

    rows = tally.table()
    report = {
        "date": time.strftime("%Y-%m-%d"),
        "model": engine.model_id,
        "identity_threshold_fmr_1e-3": engine.threshold(1e-3),
        "config": _config_dict(full.config),
        "rows": rows,
        "pose_calibration": calibration,
        "assembled_identities": len(identities),
        "assembled_challenge_kinds": dict(kinds_used),
        "challenge_sequences": n_seq,
        "p_new_session_same_sequence_given_recording_length": p_same,
        "distinct_sequences_drawn": len(draws),
        "seconds_per_frame_median": float(np.median(timings)) if timings else None,
        "wall_s": time.time() - t_start,
        "cpu_count": os.cpu_count(),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str) + "\n")
    print(markdown(report))


def pose_calibration(engine: FaceEngine, clip: list[np.ndarray]) -> dict:
    """Where the pose thresholds come from: landmark pose noise on real video, the size of real
    movements, and how much 'neutral' varies between photos of one person."""
    log("pose calibration …")
    from facegate.liveness.motion import PoseThresholds, _median3

    lo, hi = SHOT
    yaw, pitch = [], []
    for i in range(lo, hi + 1, 3):
        faces = engine.detect(clip[i])
        if faces:
            yaw.append(faces[0].quality.yaw_deg)
            pitch.append(faces[0].quality.pitch_deg)
    yaw_a, pitch_a = np.array(yaw), np.array(pitch)
    out: dict = {
        "clip_frames_10fps": len(yaw),
        # frame-to-frame estimation noise: raw minus its running median of 3
        "clip_yaw_noise_p95": float(np.percentile(np.abs(yaw_a - _median3(yaw_a)), 95)),
        "clip_pitch_noise_p95": float(np.percentile(np.abs(pitch_a - _median3(pitch_a)), 95)),
        "clip_yaw_range": [float(yaw_a.min()), float(yaw_a.max())],
        "clip_pitch_range": [float(pitch_a.min()), float(pitch_a.max())],
        "thresholds": PoseThresholds().__dict__,
    }
    if DEV.is_dir():
        by_id: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
        for p in sorted(DEV.glob("*/*.jpg")):
            try:
                faces = engine.detect(small(decode(p)))
            except FacegateError:
                continue
            if len(faces) == 1:
                by_id[p.parent.name].append((faces[0].quality.yaw_deg, faces[0].quality.pitch_deg))
        frontal_pitch = [np.array([pt for y, pt in v if abs(y) <= 8]) for v in by_id.values()]
        spreads = [float(np.abs(a[:, None] - a[None, :])[np.triu_indices(len(a), 1)].mean())
                   for a in frontal_pitch if len(a) >= 2]
        allp = np.concatenate([a for a in frontal_pitch if len(a)]) if frontal_pitch else np.zeros(0)
        ys = np.array([y for v in by_id.values() for y, _ in v])
        ps = np.array([pt for v in by_id.values() for _, pt in v])
        out.update({
            "dev_frontal_pitch_p10_p50_p90": [float(x) for x in np.percentile(allp, [10, 50, 90])] if allp.size else None,
            "dev_frontal_pitch_mean_abs_diff_within_identity": float(np.median(spreads)) if spreads else None,
            "dev_pitch_median_by_abs_yaw": {
                f"{a}-{b}": float(np.median(ps[(np.abs(ys) >= a) & (np.abs(ys) < b)]))
                for a, b in ((0, 10), (10, 25), (25, 40), (40, 55), (55, 80), (80, 91))
                if ((np.abs(ys) >= a) & (np.abs(ys) < b)).any()
            },
        })
    return out


class _Rand:
    """random_challenges wants randrange(); feed it from the seeded generator (bench only)."""

    def __init__(self, rng: np.random.Generator) -> None:
        self.rng = rng

    def randrange(self, n: int) -> int:
        return int(self.rng.integers(n))


def _config_dict(cfg: LivenessConfig) -> dict:
    from dataclasses import asdict

    return asdict(cfg)


def markdown(report: dict) -> str:
    lines = [
        f"Liveness bench — {report['date']}, model {report['model']}, identity threshold "
        f"{report['identity_threshold_fmr_1e-3']:.4f} (FMR 1e-3), {report['wall_s']:.0f} s on {report['cpu_count']} CPUs",
        "",
        "| presentation | n | metric | rate | 95% upper | top reasons |",
        "|---|---:|---|---:|---:|---|",
    ]
    for r in report["rows"]:
        top = ", ".join(f"{k} {v}" for k, v in list(r["reasons"].items())[:4])
        lines.append(f"| {r['name']} | {r['n']} | {r['metric']} | {r['rate']:.3f} | {r['upper95']:.3f} | {top} |")
    p = report["p_new_session_same_sequence_given_recording_length"]
    lines += [
        "",
        f"{report['challenge_sequences']} possible challenge sequences; a new session asks exactly the movements of a "
        f"recording of length 2/3/4 with probability {p[2]:.4f}/{p[3]:.5f}/{p[4]:.6f}.",
        f"Assembled sequences: {report['assembled_identities']} identities; challenge kinds used "
        f"{report['assembled_challenge_kinds']}.",
        f"Median check time per frame: {report['seconds_per_frame_median'] or float('nan'):.3f} s.",
    ]
    cal = report.get("pose_calibration")
    if cal:
        lines += ["", "Pose calibration: " + json.dumps({k: v for k, v in cal.items() if k != "thresholds"}, default=str)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
