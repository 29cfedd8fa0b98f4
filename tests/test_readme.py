"""The README's commands, run as written: each ```bash and ```python block, in order, in a new
working directory, with the checkout's `facegate` on PATH (as after `pipx install .` or
`source .venv/bin/activate`) and no FACEGATE_* settings, as in a new shell.

A block that cannot run here (a server that runs until Ctrl-C, the test suite itself, an
install from the network) is preceded in README.md by ``<!-- readme-test: skip: REASON -->``
and is tried by hand. ```text blocks are synopses with placeholders, not commands."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"
SKIP = re.compile(r"<!-- readme-test: skip: (?P<reason>[^>]*\S) -->\s*$")
FENCE = re.compile(r"^```(?P<lang>\w*)\n(?P<body>.*?)^```$", re.M | re.S)


@dataclass(frozen=True)
class Block:
    lang: str
    body: str
    line: int
    skip: str | None


def blocks(text: str) -> list[Block]:
    found = []
    for m in FENCE.finditer(text):
        before = text[: m.start()].rstrip("\n").rsplit("\n", 1)[-1]
        skip = SKIP.match(before)
        found.append(Block(m["lang"], m["body"], text.count("\n", 0, m.start()) + 1, skip["reason"] if skip else None))
    return found


def test_the_parser_sees_markers_and_languages() -> None:
    text = "<!-- readme-test: skip: runs forever -->\n```bash\nmake run\n```\n\n```python\nprint(1)\n```\n"
    assert [(b.lang, b.skip) for b in blocks(text)] == [("bash", "runs forever"), ("python", None)]


def test_readme_code_blocks_run_as_written(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("FACEGATE_")}
    env.update(PATH=f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}", COLUMNS="80")
    ran = 0
    for block in blocks(README.read_text(encoding="utf-8")):
        if block.lang not in ("bash", "python") or block.skip:
            continue
        cmd = ["bash", "-e", "-o", "pipefail", "-c", block.body] if block.lang == "bash" else [sys.executable, "-c", block.body]
        res = subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
        where = f"README.md line {block.line}:\n{block.body}"
        assert res.returncode == 0, f"{where}\n--- stdout\n{res.stdout}\n--- stderr\n{res.stderr}"
        ran += 1
    assert ran >= 3  # the first steps, the gallery tour and the library
    assert (tmp_path / ".facegate" / "gallery.db").exists()  # where the README says the data lives


def test_every_skipped_block_says_why() -> None:
    text = README.read_text(encoding="utf-8")
    markers = re.findall(r"^<!-- readme-test:", text, re.M)  # a marker is a line of its own
    assert len(markers) == sum(1 for b in blocks(text) if b.skip) > 0
