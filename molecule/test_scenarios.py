"""`make test`: lint, then each molecule scenario, one pytest test each.

Each test fails on the tool's non-zero exit, so the run ends with pytest's
summary of what passed and what failed. With TEST_JOBS above 1 the
scenarios run in that many lanes at once (pytest-xdist, a lane a worker):
each scenario's full output goes to .cache/test-logs/<scenario>.log, and a
failure prints its last lines. Each scenario's molecule steps are timed
(molecule/timings.py): the lanes are balanced by the last run's figures.
"""

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import timings

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = os.environ.get("SCENARIOS", "default").split()
LINT = os.environ.get("LINT", "1") == "1"
JOBS = max(1, int(os.environ.get("TEST_JOBS", "1")))
LOGS = ROOT / ".cache" / "test-logs"
TAIL = 300
# What the lint takes (ansible-lint most of it; 48 to 60 s measured on
# 2026-12-02): it runs first in lane 0, which the split counts.
LINT_SECONDS = 60.0


def lanes(scenarios: list[str], jobs: int) -> dict[str, int]:
    """Each scenario's lane: of every way to share the scenarios among the
    lanes, the one whose longest lane is shortest (a few scenarios, so all
    are tried). A scenario on another distro (`name@distro`) runs with
    molecule's working directory of its own (run_scenario) and hosts
    named after the distro (the scenario's molecule.yml), so it may run
    beside the same scenario on the default distro."""
    measured = timings.weights()
    weights = [measured.get(scenario, timings.UNKNOWN) for scenario in scenarios]
    lint = [LINT_SECONDS if LINT else 0.0] + [0.0] * (jobs - 1)
    best = min(
        itertools.product(range(jobs), repeat=len(scenarios)),
        key=lambda pick: max(lint[lane] + sum(w for w, p in zip(weights, pick) if p == lane) for lane in range(jobs)),
    )
    return dict(zip(scenarios, best))


LANES = lanes(SCENARIOS, JOBS)


def run(*argv: str, env: dict | None = None, log: Path | None = None, clock: timings.Clock | None = None) -> None:
    """Run a command; its output streams to the terminal or, with `log`,
    goes there and a failure prints the last TAIL lines (pytest shows them
    under the failure). With `clock`, its lines are timed."""
    print(f"\n==> {' '.join(argv)}", flush=True)
    out = sys.stdout
    if log is not None:
        log.parent.mkdir(parents=True, exist_ok=True)
        out = log.open("a")
        out.write(f"\n==> {' '.join(argv)}\n")
    with subprocess.Popen(
        argv, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, errors="replace",
    ) as process:
        for line in process.stdout:
            out.write(line)
            out.flush()
            if clock:
                clock.feed(line)
    if log is not None:
        out.close()
        if process.returncode:
            print("".join(log.read_text(errors="replace").splitlines(keepends=True)[-TAIL:]))
    assert process.returncode == 0, f"{' '.join(argv)} exited {process.returncode}"


@pytest.mark.skipif(not LINT, reason="a single scenario was asked for")
def lint(self) -> None:
    """`make lint`'s checks (lane 0 runs them first)."""
    run("yamllint", "--strict", ".")
    # A home of its own, as make lint gives it (see the Makefile).
    run("ansible-lint", env={**os.environ, "ANSIBLE_HOME": str(ROOT / ".cache" / "ansible-lint-home")})
    run("ruff", "check", "bench", "molecule", "roles", "examples", "plugins")
    run("ruff", "format", "--check", "roles/app/files")
    run("python", "molecule/role_docs.py", "--check")


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


@pytest.mark.skipif(not LINT, reason="a single scenario was asked for")
def test_every_reader_of_app_server_declares_the_whole_contract() -> None:
    """The fact app_server (the app role's `server` entry point) is declared
    by every role that reads it, with the same fields and types, and those
    fields are exactly the ones the app role builds."""
    import yaml

    built = yaml.safe_load((ROOT / "roles" / "app" / "vars" / "main.yml").read_text())["__app_server"]
    declared = {}
    for role in ("gunicorn", "supervisor", "circus", "nginx"):
        spec = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text())["argument_specs"]
        fields = spec["main"]["options"]["app_server"]["options"]
        declared[role] = {name: (field["type"], field.get("elements")) for name, field in fields.items()}
        assert all(field.get("required") for field in fields.values()), f"{role}: every field of app_server is required"
    assert set(declared["gunicorn"]) == set(built), "the fields gunicorn declares are not the ones the app role builds"
    for role, fields in declared.items():
        assert fields == declared["gunicorn"], f"{role} declares app_server differently from gunicorn"


@pytest.mark.skipif(not LINT, reason="a single scenario was asked for")
def test_the_process_managers_are_listed_once() -> None:
    """The app role's __app_managers is the list; the choices that argument
    specs must spell out (app_process_manager, the contract's manager and
    manager_role) are the same names, and each manager's role exists."""
    import yaml

    managers = yaml.safe_load((ROOT / "roles" / "app" / "vars" / "main.yml").read_text())["__app_managers"]
    app_spec = yaml.safe_load((ROOT / "roles" / "app" / "meta" / "argument_specs.yml").read_text())["argument_specs"]
    assert app_spec["main"]["options"]["app_process_manager"]["choices"] == list(managers)
    roles = [manager["role"] for manager in managers.values()]
    for role in roles:
        assert (ROOT / "roles" / role / "tasks" / "absent.yml").exists(), role
    contract = yaml.safe_load((ROOT / "roles" / "gunicorn" / "meta" / "argument_specs.yml").read_text())
    fields = contract["argument_specs"]["main"]["options"]["app_server"]["options"]
    assert fields["manager"]["choices"] == list(managers) and fields["manager_role"]["choices"] == roles


def test_every_documented_tag_is_the_roles_and_run_in_a_test() -> None:
    """The tags a role README's Tags section names are exactly those its
    tasks carry (besides always), and each is run with --tags by a
    scenario's test."""
    import re

    tests = "\n".join(path.read_text() for path in (ROOT / "molecule").glob("*/tests/*.py"))
    for readme in sorted((ROOT / "roles").glob("*/README.md")):
        role = readme.parent
        section = re.search(r"^## Tags\n(.*?)^## ", readme.read_text(), re.DOTALL | re.MULTILINE).group(1)
        documented = set(re.findall(r"`(" + role.name + r"_\w+)`", section))
        tagged = set()
        for tasks in (role / "tasks").glob("*.yml"):
            for line in re.findall(r"^\s*tags: \[(.*)\]", tasks.read_text(), re.MULTILINE):
                tagged |= {tag.strip() for tag in line.split(",")} - {"always"}
        assert documented == tagged, (role.name, documented, tagged)
        for tag in documented:
            assert re.search(rf'"--tags", "{tag}"|"{tag}": ', tests), (role.name, tag)


def test_nginx_is_tested_and_reloaded_in_one_place() -> None:
    """Only asgi-nginx-apply runs nginx -t or reloads nginx: no task of a
    role or playbook does it itself."""
    import re

    offenders = []
    command = re.compile(
        r"(^|[\s;&|\"'])nginx -t(\s+-q)?\s*($|[;&|)\"'])"  # nginx -t as a command, not in a message
        r"|nginx -s reload|systemctl \S*(reload|restart)\S* nginx\b"
        r"|name: nginx\s+state: (reloaded|restarted)",
        re.MULTILINE,
    )
    for path in [*(ROOT / "roles").glob("*/tasks/*.yml"), *(ROOT / "roles").glob("*/handlers/*.yml"),
                 *(ROOT / "roles").glob("*/vars/*.yml"), *(ROOT / "playbooks").rglob("*.yml"),
                 *(ROOT / "roles").glob("*/templates/**/*.j2")]:
        if path.name == "asgi-nginx-apply.j2":
            continue
        text = "\n".join(line for line in path.read_text().splitlines() if not line.lstrip().startswith("#"))
        if command.search(text):
            offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []


def run_scenario(scenario: str) -> None:
    """`name` runs on MOLECULE_DISTRO (debian12 unless set), `name@distro`
    on that distro's image."""
    name, _, distro = scenario.partition("@")
    env = None
    if distro:
        # Molecule's working directory (state, inventory, fact cache) is
        # named after the scenario alone: this run gets one of its own.
        ephemeral = ROOT / ".cache" / "molecule" / scenario
        env = {**os.environ, "MOLECULE_DISTRO": distro, "MOLECULE_EPHEMERAL_DIRECTORY": str(ephemeral)}
    # One lane streams the output as it comes; several write logs.
    log = LOGS / f"{scenario}.log" if JOBS > 1 else None
    if log:
        log.unlink(missing_ok=True)
    # The test sequence destroys first: a leftover of an interrupted run
    # (same container names) would clash.
    clock = timings.Clock()
    try:
        run("molecule", "test", "-s", name, env=env, log=log, clock=clock)
    except AssertionError:
        clock.save(scenario, passed=False)
        raise
    clock.save(scenario, passed=True)


def lane_class(number: int) -> type:
    """A test class per lane: pytest-xdist's `--dist loadscope` runs each
    class's tests in one worker, in order. (xdist_group marks with `--dist
    loadgroup` were not honoured here: the test ids never got their group,
    so each scenario was scheduled alone and the two default scenarios,
    which share container names, could have run at once.)"""

    @pytest.mark.parametrize("scenario", [s for s in SCENARIOS if LANES[s] == number])
    def test_scenario(self, scenario: str) -> None:
        run_scenario(scenario)

    methods = {"test_lint": lint} if number == 0 else {}
    return type(f"TestLane{number}", (), {**methods, "test_scenario": test_scenario})


for _number in range(JOBS):
    globals()[f"TestLane{_number}"] = lane_class(_number)
