"""Figures the reliability suite measures (faults survived, load held, inputs tried).

Each test records what it measured; the figures go to one JSON-lines file
(``$KAIZEN_FIGURES_FILE``, default ``.reliability/figures.jsonl``) and are printed as a
table at the end of the run, so `make reliability` output is what docs/operations.md
quotes. Tests assert behaviour (nothing lost, no 5xx, bounded memory), never wall time.
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def figures_file() -> Path:
    """Where this run's figures are written."""
    return Path(os.environ.get("KAIZEN_FIGURES_FILE") or ROOT / ".reliability" / "figures.jsonl")


def full() -> bool:
    """True for the full suite (`make reliability`), False for CI's short form."""
    return os.environ.get("KAIZEN_RELIABILITY", "short").lower() == "full"


def pick(short: int, full_size: int) -> int:
    """The size of a load or burst for the current form of the suite."""
    return full_size if full() else short


@dataclass
class Figures:
    """Records figures under a test's name."""

    test: str

    def record(self, name: str, value: float | int | str, unit: str = "") -> None:
        path = figures_file()
        path.parent.mkdir(parents=True, exist_ok=True)
        line = {
            "test": self.test,
            "figure": name,
            "value": value,
            "unit": unit,
            "form": "full" if full() else "short",
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        with path.open("a") as out:
            out.write(json.dumps(line) + "\n")


def table() -> str:
    """The recorded figures as an aligned text table (empty when none)."""
    path = figures_file()
    if not path.exists():
        return ""
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        return ""
    width = max(len(f"{r['test']} / {r['figure']}") for r in rows)
    out = [f"{'test / figure'.ljust(width)}  value"]
    for r in rows:
        value = r["value"]
        shown = f"{value:.3g}" if isinstance(value, float) else str(value)
        out.append(f"{(r['test'] + ' / ' + r['figure']).ljust(width)}  {shown} {r['unit']}")
    return "\n".join(out)
