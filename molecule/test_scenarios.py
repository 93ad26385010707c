"""`make test`: lint, then each molecule scenario, one pytest test each.

Each test streams the tool's own output and fails on a non-zero exit, so
the run ends with pytest's summary of what passed and what failed.
"""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = os.environ.get("SCENARIOS", "default").split()
LINT = os.environ.get("LINT", "1") == "1"


def run(*argv: str) -> None:
    print(f"\n==> {' '.join(argv)}", flush=True)
    completed = subprocess.run(argv, cwd=ROOT, stdin=subprocess.DEVNULL, check=False)
    assert completed.returncode == 0, f"{' '.join(argv)} exited {completed.returncode}"


@pytest.mark.skipif(not LINT, reason="a single scenario was asked for")
def test_lint() -> None:
    run("yamllint", "--strict", ".")
    run("ansible-lint")


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(scenario: str) -> None:
    # A leftover of an interrupted run (same container names) would clash.
    run("molecule", "destroy", "-s", scenario)
    run("molecule", "test", "-s", scenario)
