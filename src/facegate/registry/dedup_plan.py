"""The arithmetic of a de-duplication run, stated before it starts.

With N subjects taking part a full run compares N(N−1)/2 pairs; an incremental run compares
each of the m new subjects with everyone: m(N−m) + m(m−1)/2 pairs. At a false-match rate FMR
each impostor pair passes the threshold with probability FMR, so the run is expected to report
pairs × FMR *false* pairs — people a reviewer must clear by hand — on top of the real
duplicates. A run whose expectation exceeds the limit is refused unless the limit is raised
explicitly.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from ..calibration import SUPPORTED_FMRS
from .dedup_errors import ExpectedFalsePairsError

# The strictest calibrated FMR: the larger the registry, the lower the FMR it needs.
DEFAULT_FMR = min(SUPPORTED_FMRS)
# 100 expected false pairs is a review queue one trained operator clears in a working day
# (a few minutes per cluster, photos side by side). More is a staffing decision, so it must
# be asked for explicitly.
DEFAULT_MAX_EXPECTED_FALSE_PAIRS = 100.0


def pairs_compared(subjects: int, queried: int) -> int:
    """Pairs a run scores: the ``queried`` subjects against all ``subjects`` (queried included),
    each unordered pair of distinct subjects once."""
    n, m = int(subjects), int(queried)
    return m * (n - m) + m * (m - 1) // 2


def max_subjects(fmr: float, limit: float = DEFAULT_MAX_EXPECTED_FALSE_PAIRS) -> int:
    """The largest registry a full run at ``fmr`` keeps within ``limit`` expected false pairs."""
    n = int((1 + math.sqrt(1 + 8 * limit / fmr)) / 2)
    while pairs_compared(n + 1, n + 1) * fmr <= limit:
        n += 1
    while n > 1 and pairs_compared(n, n) * fmr > limit:
        n -= 1
    return n


def required_fmr(subjects: int, limit: float = DEFAULT_MAX_EXPECTED_FALSE_PAIRS) -> float:
    """The FMR a full run over ``subjects`` needs to stay within ``limit`` expected false pairs."""
    pairs = pairs_compared(subjects, subjects)
    return math.inf if pairs == 0 else limit / pairs


@dataclass(frozen=True)
class DedupPlan:
    """What a run will do and what it will cost a reviewer, computed before it starts."""

    collection: str
    purpose: str
    mode: str  # "full" | "incremental"
    model_id: str
    fmr: float
    threshold: float
    subjects: int  # taking part: active consent covering the purpose now
    queried: int  # searched against everyone (all of them, or those new since ``after_run``)
    pairs_compared: int
    expected_false_pairs: float
    max_expected_false_pairs: float
    after_run: int | None = None  # incremental: the run this one continues

    @property
    def within_limit(self) -> bool:
        return self.expected_false_pairs <= self.max_expected_false_pairs

    @property
    def fmr_needed(self) -> float | None:
        """The FMR at which these pairs would stay within the limit (None: no pairs at all)."""
        return None if self.pairs_compared == 0 else self.max_expected_false_pairs / self.pairs_compared

    def check(self) -> None:
        """ExpectedFalsePairsError unless the expected false pairs are within the limit."""
        if not self.within_limit:
            raise ExpectedFalsePairsError(
                f"{self.pairs_compared:,} pairs at FMR {self.fmr:g} are expected to give {self.expected_false_pairs:,.1f} "
                f"false pairs, over the limit of {self.max_expected_false_pairs:g}; this registry needs FMR "
                f"{self.fmr_needed or 0:.1e} or lower, or raise the limit (max_expected_false_pairs) knowing that each false "
                "pair is a review",
                plan=self.to_dict(),
            )

    def summary(self) -> str:
        """The arithmetic in one sentence (CLI and logs)."""
        who = (f"{self.queried:,} new subject(s) against {self.subjects:,}" if self.mode == "incremental"
               else f"{self.subjects:,} subjects")
        return (f"{who} consenting to {self.purpose!r}: {self.pairs_compared:,} pairs compared; at FMR {self.fmr:g} "
                f"(threshold {self.threshold:.4f}, {self.model_id}) expect {self.expected_false_pairs:,.2f} false pair(s) "
                f"(limit {self.max_expected_false_pairs:g})")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "within_limit": self.within_limit, "fmr_needed": self.fmr_needed}


def make_plan(*, collection: str, purpose: str, model_id: str, fmr: float, threshold: float, subjects: int, queried: int,
              max_expected_false_pairs: float, after_run: int | None) -> DedupPlan:
    pairs = pairs_compared(subjects, queried)
    return DedupPlan(collection, purpose, "incremental" if after_run is not None else "full", model_id, fmr, threshold,
                     subjects, queried, pairs, pairs * fmr, float(max_expected_false_pairs), after_run)
