"""molecule/default: wrong inputs against the converged host.

Each input is one site.yml run. Every run must fail in the checks, before
the provisioning play starts, with an error that names the variable; the
host's managed files and its units must be exactly as they were. The runs
change nothing, so they go three at a time. The inputs are checked on the
controller, whatever the host's distro: they run once, on Debian 12 (the
scenario on Debian 13 skips them); the platform checks at the end run on
each distro.
"""

import json
import os
import re
from concurrent.futures import ThreadPoolExecutor

import pytest
from testlib import OTHER_PLATFORMS, assert_platform_refused, converge, posing_as, recap

APP = "hello"

# (extra vars, the variable the error must name, or a pattern of the error)
BAD_INPUTS = [
    ({"app_workers": "many"}, "app_workers"),
    ({"app_workers": -2}, "app_workers"),
    ({"app_workers": 0}, "app_workers"),
    ({"gunicorn_timeout": 0}, "gunicorn_timeout"),
    ({"gunicorn_worker_class": "sync"}, "gunicorn_worker_class"),
    ({"app_process_manager": "runit"}, "app_process_manager"),
    ({"app_module": "main"}, "app_module"),
    ({"app_module": "main:app; rm -rf /"}, "app_module"),
    ({"app_root": "srv/hello"}, "app_root"),
    ({"app_source_dir": "/nonexistent/hello_app"}, "app_source_dir"),
    ({"app_source_dir": ""}, "app_source_dir is not set: set it to the absolute path"),
    ({"app_release_id": "2026/11"}, "app_release_id"),
    ({"app_keep_releases": 0}, "app_keep_releases"),
    ({"app_env": {"NOT-A-NAME": "x"}}, "app_env"),
    ({"app_credentials": {"db/password": "x"}}, "app_credentials"),
    ({"app_process_manager": "supervisor", "app_credentials": {"db": "x"}}, "app_credentials"),
    ({"app_health_path": "health"}, "app_health_path"),
    ({"app_health_scheme": "gopher"}, "app_health_scheme"),
    ({"app_dependencies": "poetry"}, "app_dependencies"),
    ({"app_dependencies": "uv-lock"}, "app_dependencies is uv-lock but app_source_dir .* has no uv.lock"),
    ({"app_requirements_file": "requirments.txt"}, "declares no dependencies: no uv.lock, no pylock.toml, no requirments.txt"),
    ({"app_health_host": ""}, "app_health_host"),
    ({"app_source_exclude": ["*.log", {"pattern": "tmp/"}]}, "app_source_exclude"),
    ({"app_socket": "/tmp/hello.sock"}, "app_socket"),
    ({"nginx_server_names": []}, "nginx_server_names"),
    ({"nginx_server_names": ["hello test"]}, "nginx_server_names"),
    ({"nginx_http_port": 70000}, "nginx_http_port"),
    ({"nginx_tls_mode": "sometimes"}, "nginx_tls_mode"),
    ({"nginx_tls_mode": "letsencrypt", "certbot_email": ""}, "certbot_email"),
    ({"nginx_static_dir": "static"}, "nginx_static_dir"),
    ({"python_index_url": "pypi.example"}, "python_index_url"),
]

# Every file the roles manage on this host, and the units they run.
MANAGED_FILES = [
    f"/etc/{APP}/app.env",
    f"/etc/{APP}/gunicorn.conf.py",
    f"/etc/{APP}/credentials/hello_db_password",
    f"/etc/systemd/system/{APP}.service",
    f"/etc/systemd/system/{APP}.socket",
    f"/etc/tmpfiles.d/{APP}.conf",
    "/etc/nginx/nginx.conf",
    "/etc/nginx/conf.d/asgi-defaults.conf",
    f"/etc/nginx/sites-available/{APP}.conf",
]
UNITS = [f"{APP}.socket", f"{APP}.service", "nginx.service"]


def snapshot(host):
    """Checksums of the managed files, the live release and the units'
    state and main PIDs: anything a run could have changed."""
    sums = host.check_output("sha256sum " + " ".join(MANAGED_FILES))
    release = host.check_output(f"readlink /srv/{APP}/current")
    units = host.check_output(
        "systemctl show -p Id,ActiveState,SubState,MainPID,NRestarts,ActiveEnterTimestamp " + " ".join(UNITS)
    )
    return {"files": sums, "release": release, "units": units}


@pytest.fixture(scope="module")
def runs(host):
    """All the bad runs, three at a time, with the host's state around them."""
    if os.environ.get("MOLECULE_DISTRO", "debian12") != "debian12":
        pytest.skip("the inputs are checked on the controller: once, in the scenario on Debian 12")
    before = snapshot(host)
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda case: converge("-e", json.dumps(case[0])), BAD_INPUTS))
    after = snapshot(host)
    return {"before": before, "after": after, "results": results}


@pytest.mark.parametrize(("index", "name"), [(i, name) for i, (_, name) in enumerate(BAD_INPUTS)])
def test_bad_input_fails_in_the_checks_naming_the_variable(runs, index, name):
    run = runs["results"][index]
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    # The error (from the first failure on) names the variable.
    failure = output[output.find("fatal:"):] if "fatal:" in output else run.stderr
    assert re.search(rf"\b{name}\b", " ".join(failure.split())), output[-3000:]
    totals = recap(run.stdout)
    assert totals.get("changed", 0) == 0 and totals.get("failed", 0) >= 1, output[-3000:]
    assert "PLAY [Provision the app servers]" not in output, output[-3000:]


def test_files_and_units_are_unchanged_after_all_bad_runs(runs):
    assert runs["after"]["files"] == runs["before"]["files"]
    assert runs["after"]["release"] == runs["before"]["release"]
    assert runs["after"]["units"] == runs["before"]["units"]
    assert "ActiveState=active" in runs["after"]["units"]


@pytest.mark.parametrize("platform", sorted(OTHER_PLATFORMS))
def test_unsupported_platform_is_refused_before_any_change(host, platform):
    """The host claims to be another platform for one run: site.yml stops
    in the checks with a message naming the platform and the supported
    ones, and changes nothing."""
    before = snapshot(host)
    with posing_as(host, platform):
        run = converge(fresh_facts=True)
    assert_platform_refused(run, platform, host.backend.get_hostname())
    assert snapshot(host) == before
