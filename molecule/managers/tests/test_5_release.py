"""molecule/managers, under systemd: how a team's project becomes a
release (examples/bookshelf: uv.lock, a src layout, pydantic-settings),
and how a release that cannot serve is stopped before it goes live, or
fails the run when only its settings broke it."""

import json
import re
import shutil
import tomllib

import pytest
from manager_suite import APP, VHOST
from packaging.markers import Marker
from packaging.utils import canonicalize_name
from testlib import (
    PROJECT,
    assert_ran,
    assert_refused_before_any_change,
    converge,
    http_get,
    playbook,
)

SOURCE = PROJECT / "examples" / "bookshelf"
DEPLOY = PROJECT / "playbooks" / "deploy.yml"
CURRENT = f"/srv/{APP}/current"
# These tests run under systemd (test_4 switched the host there; the
# inventory's manager is supervisor, which test_6 goes back to).
SYSTEMD = ("-e", "app_process_manager=systemd")


def site(*args):
    """site.yml with the host kept under systemd."""
    return converge(*SYSTEMD, *args)


def live_release(host):
    return host.check_output(f"readlink -e {CURRENT}")


def locked_runtime_set(host_python):
    """{name: version} uv.lock pins for the project's own dependencies on
    the host's Python (dev group left out)."""
    lock = tomllib.loads((SOURCE / "uv.lock").read_text())
    packages = {package["name"]: package for package in lock["package"]}
    environment = {"python_full_version": host_python, "python_version": ".".join(host_python.split(".")[:2])}
    wanted, todo = {}, [APP]
    while todo:
        package = packages[todo.pop()]
        for dependency in package.get("dependencies", []):
            marker = dependency.get("marker")
            if dependency["name"] not in wanted and (not marker or Marker(marker).evaluate(environment)):
                wanted[dependency["name"]] = packages[dependency["name"]]["version"]
                todo.append(dependency["name"])
    return wanted


def installed(host):
    listing = host.check_output(
        f"{CURRENT}/venv/bin/python -c 'import importlib.metadata as m, json; "
        "print(json.dumps({d.metadata[\"Name\"]: d.version for d in m.distributions()}))'"
    )
    return {canonicalize_name(name): version for name, version in json.loads(listing).items()}


def test_release_venv_holds_the_locked_versions_and_the_project(host):
    host_python = host.check_output(f"{CURRENT}/venv/bin/python -c 'import platform; print(platform.python_version())'")
    locked = locked_runtime_set(host_python)
    have = installed(host)
    assert {name: have.get(name) for name in locked} == locked
    assert have[APP] == "1.4.0"  # the project itself, built from its src layout
    assert "pytest" not in have  # the dev group stays on the developer's machine
    # The app runs from the installed package, not from a path hack.
    origin = host.check_output(f"{CURRENT}/venv/bin/python -c 'import bookshelf; print(bookshelf.__file__)'")
    assert origin.startswith(f"{CURRENT}/venv/lib/"), origin


def copy_of_the_app(tmp_path):
    tree = tmp_path / APP
    shutil.copytree(SOURCE, tree)
    return tree


def test_a_developers_leftovers_stay_out_and_make_no_new_release(host, tmp_path):
    tree = copy_of_the_app(tmp_path)
    before = live_release(host)
    (tree / ".env").write_text("BOOKSHELF_SIGNING_KEY=from-a-laptop\n")
    (tree / ".venv" / "bin").mkdir(parents=True)
    (tree / ".venv" / "bin" / "python").write_text("#!/bin/sh\n")
    (tree / "node_modules" / "left-pad").mkdir(parents=True)
    (tree / "node_modules" / "left-pad" / "index.js").write_text("module.exports = 1\n")
    (tree / "src" / APP / "__pycache__").mkdir()
    (tree / "src" / APP / "__pycache__" / "main.cpython-311.pyc").write_bytes(b"\0")
    (tree / ".pytest_cache").mkdir()
    assert_ran(site("-e", f"app_source_dir={tree}"))
    assert live_release(host) == before


def test_release_that_does_not_import_is_never_switched_to(host, tmp_path):
    tree = copy_of_the_app(tmp_path)
    before = live_release(host)
    releases = host.check_output(f"ls /srv/{APP}/releases")
    main = tree / "src" / APP / "main.py"
    main.write_text(main.read_text() + '\nraise RuntimeError("bookshelf cannot start: no PAYMENT_KEY")\n')
    run = site("-e", f"app_source_dir={tree}")
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert "Check the release imports the app" in output, output[-3000:]
    assert "RuntimeError: bookshelf cannot start: no PAYMENT_KEY" in output, output[-3000:]
    assert "Nothing was switched" in output
    assert live_release(host) == before
    assert http_get(host, "/", vhost=VHOST)["status"] == 200
    assert host.check_output(f"ls /srv/{APP}/releases") == releases  # the failed build is gone


@pytest.mark.parametrize(
    ("change", "pattern"),
    [
        ("requires-python", r"the project requires Python >=3\.99 .*interpreter is Python 3\.\d+"),
        ("no-dependencies", r"declares no dependencies: no uv\.lock, no pylock\.toml, no requirements\.txt, no pyproject\.toml"),
    ],
)
def test_a_project_the_host_cannot_run_is_refused_with_both_sides_named(host, tmp_path, change, pattern):
    tree = copy_of_the_app(tmp_path)
    before = live_release(host)
    if change == "requires-python":
        pyproject = tree / "pyproject.toml"
        pyproject.write_text(pyproject.read_text().replace('requires-python = ">=3.11"', 'requires-python = ">=3.99"'))
        run = site("-e", f"app_source_dir={tree}")
        output = " ".join((run.stdout + run.stderr).split())
        assert run.returncode != 0
        assert "Nothing was switched" in output
        assert re.search(pattern, output), output[-3000:]
    else:
        for name in ("pyproject.toml", "uv.lock"):
            (tree / name).unlink()
        assert_refused_before_any_change(site("-e", f"app_source_dir={tree}"), pattern)
    assert live_release(host) == before


def test_pyproject_without_a_lock_is_resolved_at_build_and_says_so(host, tmp_path):
    """No uv.lock: resolved at build, and said so; a developer's .env and
    .venv in the tree never reach the release."""
    tree = copy_of_the_app(tmp_path)
    before = live_release(host)
    (tree / "uv.lock").unlink()
    (tree / ".env").write_text("BOOKSHELF_SIGNING_KEY=from-a-laptop\n")
    (tree / ".venv" / "bin").mkdir(parents=True)
    (tree / ".venv" / "bin" / "python").write_text("#!/bin/sh\n")
    # (Each test below names the release live at its start; the last one's
    # site.yml run brings back the inventory's.)
    run = site("-e", f"app_source_dir={tree}")
    assert_ran(run)
    said = " ".join(run.stdout.split())
    assert "pyproject.toml without a lock file: dependencies resolved now, at build" in said, run.stdout[-3000:]
    release = live_release(host)
    assert release != before
    assert installed(host)[APP] == "1.4.0"
    assert not host.file(f"{release}/app/.env").exists and not host.file(f"{release}/app/.venv").exists
    assert http_get(host, "/settings", vhost=VHOST)["status"] == 200


def test_deploy_bundle_carries_the_locked_set_and_private_files_stay_private(host, tmp_path):
    """deploy.yml's bundle: the same locked versions and the project, in
    the venv the build host installed, not from the index; a file the
    source keeps private (0600) arrives readable by the app alone."""
    tree = copy_of_the_app(tmp_path)
    before = live_release(host)
    pyproject = tree / "pyproject.toml"
    pyproject.write_text(pyproject.read_text().replace('version = "1.4.0"', 'version = "1.4.1"'))
    (tree / "instance").mkdir()
    (tree / "instance" / "signing.key").write_text("private\n")
    (tree / "instance" / "signing.key").chmod(0o600)
    assert_ran(playbook(DEPLOY, *SYSTEMD, "-e", f"app_source_dir={tree}"))
    release = live_release(host)
    assert release != before
    assert "installed=bundle" in host.check_output(f"cat {release}/.release")
    # The venv was built elsewhere; its scripts run from this release.
    assert host.run(f"grep -rlI /var/cache/asgi-build {release}/venv/bin {release}/venv/pyvenv.cfg").rc == 1
    assert "gunicorn" in host.check_output(f"{release}/venv/bin/gunicorn --version 2>&1")
    host_python = host.check_output(f"{CURRENT}/venv/bin/python -c 'import platform; print(platform.python_version())'")
    locked = locked_runtime_set(host_python)
    have = installed(host)
    assert {name: have.get(name) for name in locked} == locked
    assert have[APP] == "1.4.1"
    assert http_get(host, "/settings", vhost=VHOST)["status"] == 200
    key = host.file(f"{release}/app/instance/signing.key")
    assert (key.user, key.group, key.mode) == ("root", APP, 0o640)
    assert host.run(f"runuser -u nobody -- cat {release}/app/instance/signing.key").rc != 0
    assert host.run(f"runuser -u {APP} -- cat {release}/app/instance/signing.key").stdout == "private\n"
    readme = host.file(f"{release}/app/README.md")
    assert (readme.user, readme.group, readme.mode) == ("root", "root", 0o644)


def test_settings_that_crash_the_app_fail_the_run_with_its_log(host):
    """Only the settings changed (no new release, so no import check): the
    restarted app cannot start, and site.yml fails with the app's own
    error instead of ending green over a crash loop. Then site.yml with the
    inventory's settings (and source) brings it back."""
    broken = {"app_env": {"BOOKSHELF_PAGE_SIZE": "many"}, "app_health_timeout": 8}
    try:
        run = site("-e", json.dumps(broken))
        output = run.stdout + run.stderr
        assert run.returncode != 0
        # Where the run notices depends on the manager (here systemd's
        # restart fails; elsewhere the health check times out): either way
        # the error carries the app's own words.
        assert "the app's last log lines" in output, output[-3000:]
        assert "page_size" in output and "valid integer" in output, output[-3000:]
    finally:
        assert_ran(site())
    assert http_get(host, "/", vhost=VHOST)["status"] == 200
