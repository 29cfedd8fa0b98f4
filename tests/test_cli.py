"""The CLI as a user runs it: JSON output, exit codes, clear errors. In-process (the engine loads
once), with smoke tests of the real entry points as separate processes."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from cli_support import invoke as run
from cli_support import spawn
from facegate import __version__


def test_entry_point_help_and_version():
    """The installed `facegate` script ([project.scripts]) lists every command group."""
    res = spawn("--help", entry_point=True)
    assert res.returncode == 0, res.stderr
    listed = set(re.findall(r"[\w-]+", res.stdout))
    assert {"detect", "verify", "embed", "eval", "calibrate", "demo", "collection", "enroll", "identify", "subject",
            "consent", "purge", "audit", "keys", "master-key", "serve", "liveness", "migrate", "pg"} <= listed
    res = spawn("--version", entry_point=True)
    assert res.returncode == 0 and res.stdout.strip() == f"facegate {__version__}"


def test_verify_json_match(photos):
    """Through `python -m facegate`, a separate process."""
    res = spawn("verify", "--json", photos["obama_1"], photos["obama_2"])
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["match"] is True and out["fmr"] == 1e-4
    assert out["score"] > out["threshold"] > 0


def test_verify_no_match_exits_1_with_human_output(photos):
    res = run("verify", "--fmr", "1e-3", photos["obama_1"], photos["biden_1"])
    assert res.returncode == 1
    assert "NO MATCH" in res.stdout and "FMR 0.001" in res.stdout


def test_embed_json_one_object_per_image_with_errors(photos, tmp_path):
    corrupt = tmp_path / "corrupt.jpg"
    corrupt.write_bytes(photos["obama_1"].read_bytes()[:3000])
    res = run("embed", "--json", photos["obama_1"], corrupt, photos["collins_1"])
    assert res.returncode == 3
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(lines) == 3
    assert len(lines[0]["embedding"]) == 128
    assert sum(v * v for v in lines[0]["embedding"]) == pytest.approx(1.0, abs=1e-4)
    assert lines[1]["error"]["code"] == "truncated"
    assert "embedding" in lines[2]


def test_detect_json(photos):
    res = run("detect", "--json", photos["biden_1"])
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert len(out["faces"]) == 1 and len(out["faces"][0]["landmarks"]) == 5
    assert set(out["faces"][0]["quality"]) >= {"inter_eye_px", "sharpness", "yaw_deg", "pitch_deg", "brightness"}


@pytest.fixture(scope="module")
def twins_jpg(tmp_path_factory, engine, photos) -> Path:
    """Obama left, Biden right, equal and equally off-centre: no face is the subject."""
    from test_subject_engine import TWINS, jpeg, scene

    path = tmp_path_factory.mktemp("cli-subject") / "twins.jpg"
    path.write_bytes(jpeg(scene(engine, photos, TWINS)))
    return path


def test_detect_numbers_faces_for_choosing(twins_jpg, photos):
    res = run("detect", "--json", twins_jpg, photos["biden_1"])
    assert res.returncode == 0, res.stderr
    twins, single = (json.loads(line) for line in res.stdout.splitlines())
    assert twins["subject"] is None and [f["index"] for f in twins["faces"]] == [0, 1]
    assert single["subject"] == 0 and single["faces"][0]["index"] == 0
    human = run("detect", twins_jpg)
    assert "no clear subject" in human.stdout and "face" in human.stdout


def test_verify_refuses_comparable_faces_then_takes_the_choice(twins_jpg, photos):
    res = run("verify", "--json", twins_jpg, photos["obama_2"])
    assert res.returncode == 3 and "ambiguous_face" in res.stderr and "face 1: box" in res.stderr
    error = json.loads(res.stdout)["error"]
    assert error["code"] == "ambiguous_face" and [c["face"] for c in error["candidates"]] == [0, 1]
    obama = min(error["candidates"], key=lambda c: c["box"][0])
    res = run("verify", "--json", "--face-a", obama["face"], twins_jpg, photos["obama_2"])
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout)["face_a"]["box"] == obama["box"]
    x, y, w, h = obama["box"]
    res = run("verify", "--box-b", f"{x + 5},{y},{w},{h}", photos["obama_2"], twins_jpg)
    assert res.returncode == 0 and "MATCH" in res.stdout, res.stderr


def test_embed_face_choice(twins_jpg, photos):
    first, second = (json.loads(run("embed", "--json", "--face", i, twins_jpg).stdout) for i in (0, 1))
    assert first["face"]["box"] != second["face"]["box"]
    res = run("embed", "--face", 2, twins_jpg)
    assert res.returncode == 3 and "face 2 does not exist" in res.stderr
    res = run("embed", "--face", 0, twins_jpg, photos["obama_1"])
    assert res.returncode == 2 and "exactly one" in res.stderr
    res = run("embed", "--face", 0, "--box", "1,2,3,4", twins_jpg)
    assert res.returncode == 2 and "not both" in res.stderr


def test_errors_are_clear_messages_not_tracebacks(tmp_path, photos):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    res = run("verify", text, photos["obama_1"])
    assert res.returncode == 3
    assert "not_an_image" in res.stderr and "Traceback" not in res.stderr
    res = run("verify", tmp_path / "missing.jpg", photos["obama_1"])
    assert res.returncode == 3 and "no such image file" in res.stderr
    res = run("verify", "--model", "arcface-mbf", photos["obama_1"], photos["obama_2"])
    assert res.returncode == 4 and "NON-COMMERCIAL" in res.stderr


def test_eval_and_calibrate_on_pairs(tmp_path, photos):
    root = photos["obama_1"].parent
    pairs = tmp_path / "pairs.tsv"
    pairs.write_text(
        "path_a\tpath_b\tsame\n"
        "obama_1.jpg\tobama_2.jpg\t1\nobama_1.jpg\tobama_3.jpg\t1\nobama_2.jpg\tobama_3.jpg\t1\n"
        "obama_1.jpg\tbiden_1.jpg\t0\nobama_2.jpg\tcollins_1.jpg\t0\nbiden_1.jpg\tcollins_1.jpg\t0\n"
    )
    det = tmp_path / "det.png"
    res = run("eval", "--pairs", pairs, "--root", root, "--det", det, "--json")
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["genuine_pairs"] == 3 and out["impostor_pairs"] == 3
    assert out["eer"] == 0.0 and out["tar_at_fmr"]["0.001"] == 1.0 and out["fta_rate"] == 0.0
    assert det.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    cal = tmp_path / "cal.json"
    res = run("calibrate", "--pairs", pairs, "--root", root, "--all-impostors", "-o", cal)
    assert res.returncode == 0, res.stderr
    entry = json.loads(cal.read_text())["sface-2021dec-int8bq"]
    # 5 images, obama x3 vs 2 others + biden vs collins = 7 impostor pairs
    assert entry["impostor_pairs"] == 7 and entry["genuine_pairs"] == 3
    assert set(entry["thresholds"]) == {"0.001", "0.0001", "1e-05"}


def test_verify_against_enrolled_subject(photos, tmp_path):
    """`facegate verify IMG --subject` runs 1:1 against the gallery, consent and purpose checked."""
    data = ["--data-dir", tmp_path / "store"]
    assert run("collection", "create", "staff", "--purposes", "access,fraud", *data).returncode == 0
    res = run("enroll", "staff", "emp-1", photos["obama_1"], "--purposes", "access", *data)
    assert res.returncode == 0, res.stderr
    res = run("verify", photos["obama_2"], "--subject", "emp-1", "--collection", "staff", "--purpose", "access", "--json", *data)
    assert res.returncode == 0, res.stderr
    out = json.loads(res.stdout)
    assert out["match"] is True and out["score"] > out["threshold"]
    res = run("verify", photos["biden_1"], "--subject", "emp-1", "--collection", "staff", "--purpose", "access", *data)
    assert res.returncode == 1 and "NO MATCH" in res.stdout
    # Consent covers "access" only: a "fraud" check on this subject is refused, not answered.
    res = run("verify", photos["obama_2"], "--subject", "emp-1", "--collection", "staff", "--purpose", "fraud", *data)
    assert res.returncode not in (0, 1) and "consent" in res.stderr.lower()
    res = run("verify", photos["obama_2"], "--subject", "emp-1")
    assert res.returncode == 2 and "--collection and --purpose" in res.stderr
