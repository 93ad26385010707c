"""molecule/managers, after the switch from supervisor: the app as a
[watcher] of `uvicorn --fd` processes under its own circusd (a systemd
service), checked on the running host."""

import json

import pytest
from manager_suite import *
from manager_suite import APP, VHOST, Manager, expected_workers, wait_for_workers
from testlib import assert_ran, drifted, exposure, http_get, main_pid

CIRCUS = Manager(name="circus", unit=f"{APP}-circus.service", log=f"/var/log/circus/{APP}.access.log")
CIRCUSCTL = f"/opt/circus/bin/circusctl --endpoint ipc:///run/{APP}-circus/endpoint.ipc"


@pytest.fixture(scope="module")
def manager():
    return CIRCUS


def test_circus_runs_from_its_own_virtualenv(host):
    daemon = main_pid(host, CIRCUS.unit)
    assert host.process.get(pid=daemon).args.split()[1] == "/opt/circus/bin/circusd"
    # circus is not in the app's venv, and the app's packages are not in circus's.
    assert host.run(f"/srv/{APP}/current/venv/bin/python -c 'import circus'").rc != 0
    assert host.run("/opt/circus/bin/python -c 'import fastapi'").rc != 0
    assert host.check_output(f"{CIRCUSCTL} status {APP}") == "active"


def test_circusd_runs_with_its_sandbox(host):
    level, report = exposure(host, CIRCUS.unit)
    # circusd starts as root to switch its processes to the app user, so it
    # keeps three capabilities; gunicorn's unit (never root) rates 1.1.
    assert level < 3.0, report
    caps = host.check_output(f"systemctl show -p CapabilityBoundingSet --value {CIRCUS.unit}").split()
    assert sorted(caps) == ["cap_kill", "cap_setgid", "cap_setuid"], caps
    assert http_get(host, "/", vhost=VHOST)["status"] == 200


def socket_inode(host):
    return host.check_output(f"stat -c %i {CIRCUS.socket}")


def test_changed_watcher_reloads_without_closing_the_socket_and_logs_rotate(host):
    daemon, inode = main_pid(host, CIRCUS.unit), socket_inode(host)
    try:
        run = CIRCUS.converge("-e", json.dumps({"app_workers": 3, "circus_log_max_bytes": 16384}))
        assert_ran(run)
        assert len(wait_for_workers(host, CIRCUS, 3, 10)) == 3
        # The same circusd, and the socket was never closed and opened again.
        assert main_pid(host, CIRCUS.unit) == daemon
        assert socket_inode(host) == inode
        # ~100 bytes per access line: 1500 requests write ~150KB of access log.
        host.check_output(f"asgi-loadgen --url http://127.0.0.1/health --host {VHOST} --max-requests 1500 --duration 60")
        assert host.file(f"/var/log/circus/{APP}.access.log.1").exists, host.check_output("ls -l /var/log/circus")
        assert host.file(f"/var/log/circus/{APP}.access.log").size <= 16384
    finally:
        # The role's documented tag puts the watcher back alone: another
        # role's drifted file (pip's settings) stays as it is.
        with drifted(host, "/etc/pip.conf") as pip_conf:
            back = CIRCUS.converge("--tags", "circus_watcher")
            assert pip_conf.still_drifted()
    assert_ran(back)
    assert len(wait_for_workers(host, CIRCUS, expected_workers(host), 10)) == expected_workers(host)
    assert main_pid(host, CIRCUS.unit) == daemon
