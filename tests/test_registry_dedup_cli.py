"""`facegate dedup` as an operator runs it: the arithmetic first (and --plan alone), refusals
with their exit codes, the report as JSON/CSV, clusters and reviews — in-process via the CLI."""

from __future__ import annotations

import csv
import json

import pytest

from cli_support import Ran, invoke
from facegate.gallery import ConsentSpec, Gallery
from test_registry_dedup import templates

MODEL = "sface-2021dec-int8bq"
N = 80
PLANTED = [(1, 60), (2, 61)]


@pytest.fixture
def fg(tmp_path, monkeypatch):
    monkeypatch.delenv("FACEGATE_MASTER_KEY", raising=False)
    monkeypatch.delenv("FACEGATE_STORE", raising=False)
    data = tmp_path / "data"

    def run(*args: object) -> Ran:
        return invoke(*args, env={"FACEGATE_DATA_DIR": str(data), "COLUMNS": "200"})

    run.data = data  # type: ignore[attr-defined]
    return run


@pytest.fixture
def seeded(fg):
    X = templates(N, PLANTED)
    with Gallery.open(fg.data) as g:
        g.create_collection("reg", purposes=["dedup"])
        g.import_templates("reg", [(f"S{i:03d}", X[i:i + 1], ConsentSpec(("dedup",))) for i in range(N)], model_id=MODEL)
    return fg


def test_plan_only_prints_the_arithmetic_and_runs_nothing(seeded):
    r = seeded("dedup", "run", "reg", "--purpose", "dedup", "--fmr", "0.001", "--plan", "--json")
    assert r.returncode == 0, r.stderr
    plan = json.loads(r.stdout)["plan"]
    assert plan["pairs_compared"] == N * (N - 1) // 2 and plan["expected_false_pairs"] == pytest.approx(3.16)
    r = seeded("dedup", "run", "reg", "--purpose", "dedup", "--plan")
    assert r.returncode == 0 and "pairs compared" in r.stdout and f"{N * (N - 1) // 2:,}" in r.stdout
    assert json.loads(seeded("dedup", "runs", "reg", "--json").stdout) == []


def test_refusals_and_their_exit_codes(seeded):
    r = seeded("dedup", "run", "reg", "--purpose", "dedup", "--fmr", "2e-5")
    assert r.returncode == 2 and "no threshold calibrated" in r.stderr
    r = seeded("dedup", "run", "reg", "--purpose", "dedup", "--fmr", "0.001", "--max-expected-false-pairs", "1", "--json")
    assert r.returncode == 3
    assert json.loads(r.stdout.splitlines()[-1])["error"]["code"] == "expected_false_pairs_over_limit"
    r = seeded("dedup", "run", "reg", "--purpose", "dedup", "--fmr", "0.001", "--max-expected-false-pairs", "1")
    assert r.returncode == 3 and "over the limit" in r.stdout and "expected_false_pairs_over_limit" in r.stderr
    r = seeded("dedup", "run", "reg", "--purpose", "marketing")
    assert r.returncode == 3 and "purpose_not_allowed" in r.stderr
    r = seeded("dedup", "run", "reg", "--purpose", "dedup", "--incremental")
    assert r.returncode == 5 and "no_previous_dedup_run" in r.stderr
    r = seeded("dedup", "run", "reg", "--purpose", "dedup", "--report", "out.txt")
    assert r.returncode == 2 and "--report" in r.stderr
    assert json.loads(seeded("dedup", "runs", "reg", "--json").stdout) == []


def test_run_report_files_clusters_and_review(seeded, tmp_path):
    out_csv, out_json = tmp_path / "pairs.csv", tmp_path / "report.json"
    r = seeded("dedup", "run", "reg", "--purpose", "dedup", "--fmr", "0.001", "--report", out_csv, "--json")
    assert r.returncode == 0, r.stderr
    rep = json.loads(r.stdout)
    found = {tuple(c["subjects"]) for c in rep["clusters"]}
    assert {(f"S{i:03d}", f"S{j:03d}") for i, j in PLANTED} <= found
    rows = list(csv.DictReader(out_csv.open()))
    assert len(rows) == rep["pairs"] and {r["cluster"] for r in rows} == {c["key"] for c in rep["clusters"]}
    r = seeded("dedup", "clusters", "reg", "--report", out_json)
    assert r.returncode == 0 and rep["clusters"][0]["key"] in r.stdout
    assert json.loads(out_json.read_text())["pairs"] == rep["pairs"]
    key = rep["clusters"][0]["key"]
    assert seeded("dedup", "review", "reg", key, "--note", "x").returncode == 2  # neither --same nor --different
    assert seeded("dedup", "review", "reg", key, "--same", "--different", "--note", "x").returncode == 2
    r = seeded("dedup", "review", "reg", "f" * 32, "--same", "--note", "x")
    assert r.returncode == 3 and "cluster_not_found" in r.stderr
    r = seeded("dedup", "review", "reg", key, "--different", "--note", "twins [bold]seen[/]", "--actor", "ana", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["decision"] == "different"
    assert "[different: twins [bold]seen[/]]" in seeded("dedup", "clusters", "reg", "--all").stdout  # a note is text
    later = json.loads(seeded("dedup", "clusters", "reg", "--json").stdout)
    assert key not in {c["key"] for c in later["clusters"]} and later["reviewed_hidden"] == 1
    everything = json.loads(seeded("dedup", "clusters", "reg", "--all", "--json").stdout)
    assert next(c for c in everything["clusters"] if c["key"] == key)["review"]["actor"] == "ana"
    runs = json.loads(seeded("dedup", "runs", "reg", "--json").stdout)
    assert [r["status"] for r in runs] == ["completed"]
    assert "completed" in seeded("dedup", "runs", "reg").stdout


def test_real_photos_enrolled_twice_are_reported(fg, photos):
    assert fg("collection", "create", "people", "--purposes", "dedup").returncode == 0
    for ext, photo in (("A", "obama_1"), ("B", "obama_3"), ("C", "biden_1")):
        r = fg("enroll", "people", ext, photos[photo], "-p", "dedup", "--evidence", "form")
        assert r.returncode == 0, r.stderr
    r = fg("dedup", "run", "people", "--purpose", "dedup")
    assert r.returncode == 0, r.stderr
    assert "expected false pairs" in r.stdout and "1 pair(s) in 1 cluster(s)" in r.stdout
    assert "A  B" in r.stdout
