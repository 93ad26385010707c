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


def run(*argv: str, env: dict | None = None) -> None:
    print(f"\n==> {' '.join(argv)}", flush=True)
    completed = subprocess.run(argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, check=False)
    assert completed.returncode == 0, f"{' '.join(argv)} exited {completed.returncode}"


@pytest.mark.skipif(not LINT, reason="a single scenario was asked for")
def test_lint() -> None:
    run("yamllint", "--strict", ".")
    run("ansible-lint")


@pytest.mark.skipif(not LINT, reason="a single scenario was asked for")
@pytest.mark.parametrize("role", sorted(p.name for p in (ROOT / "roles").iterdir()))
def test_role_declares_every_default(role: str) -> None:
    """Every default is in argument_specs and every spec option has a default,
    so validation covers all inputs and ansible-doc documents them all. The
    narrow entry points (restart, absent) declare the subset they read."""
    import yaml

    defaults = yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text()) or {}
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    for entry, spec in specs.items():
        options = set(spec.get("options", {}))
        if entry in ("main", "validate"):
            assert set(defaults) - options == set(), f"{role}/{entry}: defaults missing from the spec"
        # Per-call parameters of an entry point (with an explicit `required`)
        # need no default.
        per_call = {n for n, o in spec.get("options", {}).items() if "required" in o}
        assert options - set(defaults) - per_call == set(), f"{role}/{entry}: spec options without a default"
        for name, option in spec["options"].items():
            assert option.get("description"), f"{role}: {name} has no description"


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_scenario(scenario: str) -> None:
    """`name` runs on MOLECULE_DISTRO (debian12 unless set), `name@distro`
    on that distro's image."""
    name, _, distro = scenario.partition("@")
    env = {**os.environ, "MOLECULE_DISTRO": distro} if distro else None
    # A leftover of an interrupted run (same container names) would clash.
    run("molecule", "destroy", "-s", name, env=env)
    run("molecule", "test", "-s", name, env=env)
