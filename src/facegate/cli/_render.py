"""Results for people: tables that fit the terminal (80 columns included) and values as words.

Tables never cut an identifier short: when the columns do not fit, the least needed ones are left
out (the caption says which, and ``--json`` has everything); text columns wrap between words.
Values: lists joined with commas, nothing as "—", times as UTC date and time, mappings as
``key: value`` lines.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rich import box
from rich.table import Table
from rich.text import Text

from ._common import console

NONE = "—"


@dataclass(frozen=True)
class Col:
    """A table column. ``drop``: 0 never left out (identifiers), else the lower the sooner when
    the terminal is too narrow. ``wrap``: the text may break between words (lists, prose)."""

    header: str
    drop: int = 0
    right: bool = False
    wrap: bool = False


def fmt_time(t: dt.datetime | None) -> str:
    return NONE if t is None else t.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def human(value: Any) -> str:
    """One value as a person reads it."""
    if value is None:
        return NONE
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, dt.datetime):
        return fmt_time(value)
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return _maybe_time(value)
    if isinstance(value, Mapping):
        return "\n".join(f"{label(k)}: {human(v)}" for k, v in value.items()) or NONE
    if isinstance(value, Sequence):
        return ", ".join(human(v) for v in value) or NONE
    return str(value)


def label(key: str) -> str:
    return key.replace("_", " ")


def _maybe_time(text: str) -> str:
    """ISO times from ``to_dict`` (``2026-12-05T02:15:37.126Z``) in the CLI's UTC form."""
    if len(text) < 19 or text[4:5] != "-" or text[10:11] != "T":
        return text
    try:
        return fmt_time(dt.datetime.fromisoformat(text.replace("Z", "+00:00")))
    except ValueError:
        return text


def print_fields(title: str, fields: Mapping[str, Any]) -> None:
    """One record as field / value lines."""
    console.print(Text(title, style="bold"))
    table = Table(show_header=False, box=None, padding=(0, 2, 0, 0))
    table.add_column("field", no_wrap=True, style="bold")
    table.add_column("value", overflow="fold")
    for k, v in fields.items():
        table.add_row(label(k), Text(human(v)))
    console.print(table)


def print_table(title: str, cols: Sequence[Col], rows: Sequence[Sequence[str | Text]], *, more: str = "") -> None:
    """Rows under ``cols``, leaving out the least needed columns until the rest fit; the last
    line names them and ``more`` (e.g. "facegate collection show NAME") says where they are."""
    cells = [[c if isinstance(c, Text) else Text(c) for c in r] for r in rows]  # data, not markup
    texts = [[col.header, *(r[i].plain for r in cells)] for i, col in enumerate(cols)]
    full = [max(len(line) for t in ts for line in t.splitlines() or [""]) for ts in texts]
    least = [_longest_word(ts) if col.wrap else full[i] for i, (col, ts) in enumerate(zip(cols, texts))]
    keep = list(range(len(cols)))
    droppable = sorted((i for i, c in enumerate(cols) if c.drop), key=lambda i: cols[i].drop)
    # The widths are counted here, not left to Rich, which would cut the last column short:
    # three characters of padding and rule between two columns.
    spare = console.width - 3 * (len(keep) - 1) - sum(least)
    while spare < 0 and droppable:
        i = droppable.pop(0)
        keep.remove(i)
        spare += least[i] + 3
    width = {i: least[i] for i in keep}
    for i in sorted(keep, key=lambda i: full[i] - least[i]):  # unwrap the columns that need least room first
        grow = min(spare, full[i] - width[i])
        width[i] += grow
        spare -= grow
    table = Table(box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False)
    for i in keep:
        col = cols[i]
        table.add_column(col.header, justify="right" if col.right else "left", width=width[i],
                         no_wrap=not col.wrap, overflow="fold")
    for r in cells:
        table.add_row(*(r[i] for i in keep))
    console.print(Text(title, style="bold"))
    console.print(table)
    left_out = [c.header for i, c in enumerate(cols) if i not in keep]
    if left_out:
        console.print(Text(f"not shown at this width: {', '.join(left_out)} (see {more or '--json'})", style="dim"))


def _longest_word(texts: Sequence[str]) -> int:
    return max((len(w) for t in texts for w in t.split()), default=0)
