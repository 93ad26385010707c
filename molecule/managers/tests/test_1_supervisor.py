"""molecule/managers, first: the app as an [fcgi-program] of `uvicorn
--fd 0` processes under Debian's supervisord (the scenario's own manager),
checked on the running host."""

import json

import pytest
from manager_suite import *
from manager_suite import (
    APP,
    VHOST,
    Manager,
    expected_workers,
    uvicorn_pids,
    wait_for_workers,
)
from testlib import assert_ran, assert_refused_before_any_change, drifted, main_pid

SUPERVISOR = Manager(name="supervisor", unit="supervisor.service", log=f"/var/log/supervisor/{APP}-*.log")


@pytest.fixture(scope="module")
def manager():
    return SUPERVISOR


def test_processes_are_numbered_and_owned_by_the_program_group(host):
    status = host.check_output(f"supervisorctl status {APP}:*")
    names = sorted(line.split()[0] for line in status.splitlines())
    assert names == [f"{APP}:{APP}-{n}" for n in range(expected_workers(host))], status
    assert all(" RUNNING " in line for line in status.splitlines()), status
    sock = host.file(SUPERVISOR.socket)
    assert (sock.user, sock.group, sock.mode) == ("root", "www-data", 0o660)


def test_changed_program_reloads_only_its_group_and_logs_rotate(host):
    daemon = main_pid(host, SUPERVISOR.unit)
    host.check_output(
        "printf '[program:bystander]\\ncommand=/bin/sleep 600\\n' > /etc/supervisor/conf.d/bystander.conf"
        " && supervisorctl update bystander"
    )
    bystander = host.check_output("supervisorctl pid bystander")
    try:
        run = SUPERVISOR.converge("-e", json.dumps({"app_workers": 3, "supervisor_log_max_bytes": "16KB"}))
        assert_ran(run)
        assert len(wait_for_workers(host, SUPERVISOR, 3, 10)) == 3
        # supervisord and the other program kept running.
        assert main_pid(host, SUPERVISOR.unit) == daemon
        assert host.check_output("supervisorctl pid bystander") == bystander
        # ~100 bytes per access line: 1500 requests write ~150KB across the processes.
        host.check_output(f"asgi-loadgen --url http://127.0.0.1/health --host {VHOST} --max-requests 1500 --duration 60")
        rotated = host.run(f"ls /var/log/supervisor/{APP}-*.log.1").stdout.split()
        assert rotated, host.check_output("ls -l /var/log/supervisor")
        for path in rotated:
            assert host.file(path[: -len(".1")]).size <= 16 * 1024
    finally:
        host.run("supervisorctl stop bystander; rm -f /etc/supervisor/conf.d/bystander.conf; supervisorctl update bystander")
        # The role's documented tag puts the program back alone: another
        # role's drifted file (pip's settings) stays as it is.
        with drifted(host, "/etc/pip.conf") as pip_conf:
            back = SUPERVISOR.converge("--tags", "supervisor_program")
            assert pip_conf.still_drifted()
    assert_ran(back)
    assert len(wait_for_workers(host, SUPERVISOR, expected_workers(host), 10)) == expected_workers(host)
    assert main_pid(host, SUPERVISOR.unit) == daemon


# Checked once here: the same checks refuse them whichever manager runs.
@pytest.mark.parametrize(
    ("extra", "pattern"),
    [
        ({"app_process_manager": "systemd-ish"}, r"app_process_manager must be one of: systemd, supervisor, circus, got: systemd-ish"),
        ({"gunicorn_timeout": 60}, r"gunicorn_timeout belongs to another process manager"),
        ({"app_workers": 0}, r"app_workers must be at least 1"),
    ],
)
def test_bad_input_fails_before_any_change(host, extra, pattern):
    before = host.check_output(f"sha256sum /etc/nginx/sites-available/{APP}.conf")
    pids = uvicorn_pids(host, SUPERVISOR)
    assert_refused_before_any_change(SUPERVISOR.converge("-e", json.dumps(extra)), pattern)
    assert host.check_output(f"sha256sum /etc/nginx/sites-available/{APP}.conf") == before
    assert uvicorn_pids(host, SUPERVISOR) == pids
