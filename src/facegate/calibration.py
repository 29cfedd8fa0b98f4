"""Decision thresholds per model, calibrated for target false-match rates.

The table lives in ``data/calibration.json`` (written by ``facegate calibrate``), with the data
set, pair counts and date it came from, so every decision can say what its threshold rests on.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Any

from .errors import CalibrationError

SUPPORTED_FMRS = (1e-3, 1e-4, 1e-5)
DEFAULT_FMR = 1e-4


def supported_fmr(fmr: float) -> float:
    """The calibrated FMR that ``fmr`` names (within rounding); CalibrationError for any other."""
    for supported in SUPPORTED_FMRS:
        if math.isclose(fmr, supported, rel_tol=1e-6):
            return supported
    raise CalibrationError(
        f"no threshold calibrated for FMR {fmr:g}; choose one of {', '.join(f'{f:g}' for f in SUPPORTED_FMRS)}", fmr=fmr
    )


@dataclass(frozen=True)
class Calibration:
    model: str
    thresholds: dict[float, float]
    dataset: str
    genuine_pairs: int
    impostor_pairs: int
    date: str
    notes: str = ""

    def threshold(self, fmr: float) -> float:
        for target, value in self.thresholds.items():
            if math.isclose(target, fmr, rel_tol=1e-6):
                return value
        raise CalibrationError(
            f"no threshold calibrated for FMR {fmr:g} (model {self.model}); "
            f"choose one of {', '.join(f'{f:g}' for f in sorted(self.thresholds, reverse=True))}",
            fmr=fmr,
        )


def _parse(model: str, entry: dict[str, Any]) -> Calibration:
    return Calibration(
        model=model,
        thresholds={float(k): float(v) for k, v in entry["thresholds"].items()},
        dataset=entry["dataset"],
        genuine_pairs=int(entry["genuine_pairs"]),
        impostor_pairs=int(entry["impostor_pairs"]),
        date=entry["date"],
        notes=entry.get("notes", ""),
    )


@lru_cache(maxsize=1)
def _table() -> dict[str, Calibration]:
    raw = json.loads(resources.files("facegate").joinpath("data/calibration.json").read_text())
    return {model: _parse(model, entry) for model, entry in raw.items()}


def calibration_for(model_id: str) -> Calibration:
    try:
        return _table()[model_id]
    except KeyError:
        raise CalibrationError(f"model {model_id} has no calibration; run `facegate calibrate`", model=model_id) from None
