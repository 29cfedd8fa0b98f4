"""Errors a CLI user can meet speak the CLI's language: flags, not library parameter names,
class names or Python calls."""

from __future__ import annotations

import re

import pytest

from cli_support import invoke as run

# Library vocabulary: snake_case parameter names, CamelCase classes, calls like Gallery.open(…)
LIBRARY_WORDS = re.compile(r"\b[a-z]+_[a-z_]+\b|\b[A-Z][a-z]+[A-Z]\w+\b|\w+\.\w+\(")


def _message(stderr: str) -> str:
    """The error text without its code in brackets, e.g. "(liveness_required)"."""
    return re.sub(r"\((\w+)\):", ":", stderr)


@pytest.fixture()
def gallery(tmp_path, photos):
    def fg(*args):
        return run(*args, "--data-dir", tmp_path)

    assert fg("collection", "create", "branch", "-p", "access", "--liveness-required", "enroll").returncode == 0
    assert fg("collection", "create", "open", "-p", "access").returncode == 0
    assert fg("enroll", "open", "E1", photos["obama_1"], "-p", "access").returncode == 0
    return fg


@pytest.mark.parametrize(("args", "flag", "code"), [
    (("identify", "open", "{obama_2}", "--purpose", "access", "--top-k", "0"), "--top-k", 2),
    (("enroll", "open", "E1", "{biden_1}", "--force-mismatch", " "), "--force-mismatch", 2),
    (("collection", "create", "c", "-p", "access", "--retention-days", "0"), "--retention-days", 2),
    (("collection", "create", "c", "-p", "access", "--threshold", "1.5"), "--threshold", 2),
    (("subject", "list", "open", "--limit", "0"), "--limit", 2),
    (("audit", "list", "--limit", "100000"), "--limit", 2),
    (("enroll", "branch", "E2", "{obama_2}", "-p", "access"), "--liveness-override", 5),
    (("enroll", "open", "E9", "{obama_2}"), "--purposes", 5),
])
def test_errors_name_flags_not_library_parameters(gallery, photos, args, flag, code) -> None:
    res = gallery(*(a.format(**photos) for a in args))
    assert res.returncode == code, res.stderr
    assert flag in res.stderr
    assert not LIBRARY_WORDS.findall(_message(res.stderr)), res.stderr


@pytest.mark.parametrize(("pairs", "says"), [
    ("obama_1.jpg\tobama_2.jpg\t1\n", "needs both genuine (1) and impostor (0) pairs"),
    ("obama_1.jpg\tobama_2.jpg\tyes\n", "expected 'path_a<TAB>path_b<TAB>0|1'"),
])
def test_eval_pairs_file_problems_are_usage_errors(tmp_path, photos, pairs, says) -> None:
    f = tmp_path / "pairs.tsv"
    f.write_text("path_a\tpath_b\tsame\n" + pairs)
    res = run("eval", "--pairs", f, "--root", photos["obama_1"].parent, "--json")
    assert res.returncode == 2 and "--pairs" in res.stderr and says in res.stderr
