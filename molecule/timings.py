"""Where `make test`'s time goes: each scenario's molecule phases, timed as
the run goes, kept for the next run's lane balancing and printed as a
table at the end of the run (this module is also a pytest plugin:
`pytest -p timings`).

Each scenario run writes .cache/test-timings/<scenario>.json. The lanes are
balanced by the last run's figures; a fresh clone has none, and uses
molecule/timings.json, the figures of the last full run on 2 cores that
was committed (copy .cache/test-timings.json there after such a run).
"""

import json
import re
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RUNS = ROOT / ".cache" / "test-timings"
COMMITTED = Path(__file__).resolve().parent / "timings.json"
LATEST = ROOT / ".cache" / "test-timings.json"
# molecule announces each step of its sequence: `INFO [default > converge]
# Executing` without a terminal, `INFO default ➜ converge: Executing` on one.
STEP = re.compile(r"(?:\[[\w.@-]+ > (?P<plain>\w+)\]|[\w.@-]+ \u279c (?P<tty>\w+):) Executing")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
PHASES = ["destroy", "create", "prepare", "converge", "idempotence", "verify"]
# For a scenario no run has timed yet.
UNKNOWN = 600.0


class Clock:
    """Feeds on molecule's output lines and times its steps. A step that
    runs twice (destroy, first and last) adds up."""

    def __init__(self):
        self.started = time.monotonic()
        self.phases: dict[str, float] = {}
        self._step = ""
        self._since = self.started

    def feed(self, line: str) -> None:
        match = STEP.search(ANSI.sub("", line))
        if match:
            self._close()
            self._step = match["plain"] or match["tty"]

    def _close(self) -> None:
        now = time.monotonic()
        if self._step:
            self.phases[self._step] = round(self.phases.get(self._step, 0.0) + now - self._since, 1)
        self._step, self._since = "", now

    def save(self, scenario: str, passed: bool) -> None:
        self._close()
        RUNS.mkdir(parents=True, exist_ok=True)
        record = {
            "total": round(time.monotonic() - self.started, 1),
            "phases": self.phases,
            "passed": passed,
            "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        }
        (RUNS / f"{scenario}.json").write_text(json.dumps(record, indent=1) + "\n")


def _read(path: Path) -> dict[str, dict]:
    return json.loads(path.read_text()) if path.exists() else {}


def weights() -> dict[str, float]:
    """Seconds per scenario: the last passing run that timed it, else the
    committed figures. Read before any scenario of this run ends, so every lane
    (pytest-xdist worker) computes the same split."""
    # A failed run stopped early: its time says nothing of the scenario's.
    latest = {name: record for name, record in _read(LATEST).items() if record.get("passed", True)}
    measured = {**_read(COMMITTED), **latest}
    return {name: record["total"] for name, record in measured.items()}


def collect() -> dict[str, dict]:
    """This run's records (the scenarios timed since the run's start),
    merged into .cache/test-timings.json over the earlier runs' ones."""
    records = {path.stem: json.loads(path.read_text()) for path in sorted(RUNS.glob("*.json"))} if RUNS.exists() else {}
    if records:
        LATEST.write_text(json.dumps({**_read(LATEST), **records}, indent=1, sort_keys=True) + "\n")
    return records


def table(records: dict[str, dict]) -> str:
    """Minutes:seconds per scenario and phase."""

    def mmss(seconds):
        return f"{int(seconds // 60)}:{int(seconds % 60):02d}" if seconds else "-"

    columns = ["scenario", *PHASES, "total"]
    rows = [
        [name, *(mmss(r["phases"].get(p, 0)) for p in PHASES), mmss(r["total"]) + ("" if r["passed"] else " FAILED")]
        for name, r in sorted(records.items(), key=lambda item: -item[1]["total"])
    ]
    widths = [max(len(str(row[i])) for row in [columns, *rows]) for i in range(len(columns))]
    lines = ["  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)) for row in [columns, *rows]]
    return "\n".join(lines)


def clear() -> None:
    """Forget the previous run's per-scenario records (the run about to
    start writes its own)."""
    if RUNS.exists():
        for path in RUNS.glob("*.json"):
            path.unlink()


def pytest_sessionstart(session) -> None:
    # The controller of a run that runs scenarios (not a lane, not --collect-only).
    if not hasattr(session.config, "workerinput") and not session.config.option.collectonly:
        clear()


def pytest_terminal_summary(terminalreporter) -> None:
    records = collect()
    if records:
        terminalreporter.write_sep("-", "time per scenario and molecule step (m:ss)")
        terminalreporter.write_line(table(records))
