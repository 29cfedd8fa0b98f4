"""`facegate liveness …` as a user runs it (in-process): JSON output, exit codes."""

from __future__ import annotations

import json
from pathlib import Path

from cli_support import Ran, invoke

CLIP = Path(__file__).parent / "data" / "liveness" / "miranda_motion.mp4"


def run(*args: object) -> Ran:
    return invoke("liveness", *args)


def test_video_passive_and_with_challenges():
    res = run("check", CLIP, "--challenge", "", "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["live"] is True and out["frames"] == 43 and out["best_face"]["quality"]["inter_eye_px"] > 0
    # the clip never turns left: asking for it fails, exit 1, human output names the reasons
    res = run("check", CLIP, "--challenge", "left,up")
    assert res.returncode == 1
    assert "NOT LIVE" in res.stdout and "challenge_not_met" in res.stdout


def test_repeated_photo_frames(photos):
    res = run("check", *([photos["obama_1"]] * 6), "--challenge", "right,closer", "--json")
    assert res.returncode == 1
    out = json.loads(res.stdout)
    assert {"static_frames", "planar_motion", "challenge_not_met"} <= set(out["reasons"])


def test_bad_input_and_challenge_draw(tmp_path):
    res = run("check", CLIP, "--challenge", "smile")
    assert res.returncode == 3 and "liveness_unknown_challenge" in res.stderr
    junk = tmp_path / "x.mp4"
    junk.write_bytes(b"not a video")
    res = run("check", junk, "--challenge", "left,up")
    assert res.returncode == 3 and "liveness_bad_frames" in res.stderr
    res = run("challenge", "--n", "3", "--json")
    assert res.returncode == 0
    assert len(json.loads(res.stdout)["challenges"]) == 3
