"""Tests shared by supervisor and circus, on the running host of
molecule/managers, and how that host is switched between managers.

A test module imports them (`from manager_suite import *`) and defines the
fixture `manager`: a Manager naming its daemon's unit, socket and log
files. Everything else (the app, nginx, the env file) is the same as in
the default scenario.
"""

import json
import time
from dataclasses import dataclass

from testlib import (
    CONVERGE,
    PROJECT,
    assert_active,
    assert_check_mode_changes_nothing,
    assert_only_in_hand_answers_lost,
    assert_ran,
    assert_refused_before_any_change,
    converge,
    expected_environ,
    http_get,
    inventory_vars,
    journal,
    load_while,
    main_pid,
    playbook,
    under_load,
    vcpus,
)

APP = "bookshelf"
VHOST = "bookshelf.test"
ROLLING_RESTART = PROJECT / "playbooks" / "rolling_restart.yml"


@dataclass
class Manager:
    name: str  # the value of app_process_manager
    unit: str  # the daemon's systemd unit
    log: str  # a shell glob of the app's access log files

    @property
    def socket(self):
        return f"/run/{APP}/{self.name}.sock"

    def playbook(self, path, *args):
        """A playbook run with this manager chosen, whatever the inventory
        says (the scenario's host changes manager; a later -e in args still
        wins)."""
        return playbook(path, "-e", f"app_process_manager={self.name}", *args)

    def converge(self, *args):
        """site.yml with this manager chosen."""
        return self.playbook(CONVERGE, *args)


def app_processes(host):
    """{pid: parent pid} of every process of the app's user."""
    out = host.run(f"ps -o pid=,ppid= -u {APP}").stdout
    return {int(pid): int(ppid) for pid, ppid in (line.split() for line in out.splitlines())}


def uvicorn_pids(host, manager):
    """uvicorn processes of the app user whose parent is the manager's daemon."""
    daemon = main_pid(host, manager.unit)
    parents = app_processes(host)
    pids = host.run(f"pgrep -u {APP} -f 'bin/uvicorn --fd'").stdout.split()
    return sorted(int(pid) for pid in pids if parents.get(int(pid)) == daemon)


def expected_workers(host):
    return max(2, vcpus(host))


def wait_for_workers(host, manager, count, seconds):
    """The manager's uvicorn pids once there are `count` of them, polled
    for at most `seconds`; the last list seen otherwise."""
    deadline = time.monotonic() + seconds
    pids = uvicorn_pids(host, manager)
    while len(pids) != count and time.monotonic() < deadline:
        time.sleep(0.5)
        pids = uvicorn_pids(host, manager)
    return pids


def test_manager_runs_the_computed_number_of_uvicorn_processes_as_app_user(host, manager):
    assert_active(host, manager.unit)
    daemon = main_pid(host, manager.unit)
    assert host.process.get(pid=daemon).user == "root"
    pids = uvicorn_pids(host, manager)
    assert len(pids) == expected_workers(host), f"{pids}\n{journal(host, manager.unit)}"
    for pid in pids:
        process = host.process.get(pid=pid)
        assert (process.user, process.group) == (APP, APP)
    # Nothing else of the app runs: no gunicorn, no process of another manager.
    assert set(app_processes(host)) == set(pids)


def test_socket_is_held_by_the_manager_and_only_nginx_may_connect(host, manager):
    sock = host.file(manager.socket)
    assert sock.is_socket
    assert manager.socket in host.check_output("ss -xlnH")
    directory = host.file(f"/run/{APP}")
    assert (directory.user, directory.group, directory.mode) == ("root", "www-data", 0o750)
    connect = f"python3 -c \"import socket; socket.socket(socket.AF_UNIX).connect('{manager.socket}')\""
    assert host.run(f"runuser -u www-data -- {connect}").rc == 0
    denied = host.run(f"runuser -u {APP} -- {connect}")
    assert denied.rc != 0 and "Permission denied" in denied.stderr


def test_request_through_nginx_is_answered_by_the_managers_processes(host, manager):
    answer = http_get(host, "/", vhost=VHOST)
    assert answer["status"] == 200, answer
    assert answer["json"]["app"] == APP
    # The env file is loaded (see test_settings_arrive_as_written).
    assert answer["json"]["message"] == "Grüße aus dem Regal — 本棚"
    assert answer["json"]["pid"] in uvicorn_pids(host, manager)
    scheme = http_get(host, "/request", vhost=VHOST, headers={"X-Forwarded-For": "203.0.113.9"})
    assert scheme["json"]["client"] == "127.0.0.1", scheme  # nginx replaces a forged address


def assert_settings_arrive_as_written(host):
    """Every app_env and app_secrets value of the inventory is, byte for
    byte, what the app's process finds in its environment (UTF-8, a PEM
    key's lines, quotes, $, #, backslashes; lists, mappings, numbers and
    booleans as JSON), and what its pydantic-settings model parsed."""
    variables = inventory_vars(host.backend.hostname)
    written = {**variables["app_env"], **variables["app_secrets"]}
    answer = http_get(host, "/settings", vhost=VHOST)
    assert answer["status"] == 200, answer
    environ = {name: value for name, value in answer["json"]["environ"].items() if value is not None}
    assert environ == expected_environ(written)
    parsed = answer["json"]["parsed"]
    for name, value in written.items():
        assert parsed[name.removeprefix("BOOKSHELF_").lower()] == value, name


def test_settings_arrive_as_written(host, manager):
    assert_settings_arrive_as_written(host)


def test_access_log_is_written_to_a_rotated_file(host, manager):
    marker = f"log-probe-{manager.name}-5d1c"
    assert http_get(host, f"/health?{marker}", vhost=VHOST)["status"] == 200
    found = host.run(f"sleep 1; grep -l {marker} {manager.log}")
    assert found.rc == 0, host.run(f"tail -n 5 {manager.log}").stdout


def test_rolling_restart_under_load_drops_nothing(host, manager):
    before = uvicorn_pids(host, manager)
    daemon = main_pid(host, manager.unit)
    # Four clients, each pausing 10 ms between requests: the restart meets
    # a steady few hundred requests a second. (Unpaced, the load took both
    # cores and the playbook ran three times as long.)
    load, run = load_while(host, lambda: manager.playbook(ROLLING_RESTART), vhost=VHOST, concurrency=4, pause=0.01)
    assert_ran(run)
    after = wait_for_workers(host, manager, len(before), 10)
    assert len(after) == len(before) and not set(after) & set(before), (before, after)
    assert main_pid(host, manager.unit) == daemon  # the daemon itself kept running
    assert load["stopped"] == "stop-file", load  # the load outlasted the restart
    assert load["requests"] > 100, load
    assert load["failed"] == 0, f"{load}\n{journal(host, manager.unit)}"
    served_by = {int(pid) for pid in load["pids"]}
    assert served_by & set(before) and served_by & set(after), (served_by, before, after)


def test_killed_process_is_replaced_and_loses_only_what_it_was_writing(host, manager):
    """kill -9 of one uvicorn process under load (4 clients): the manager
    starts another within ten seconds; nginx retries on the others every
    request the dead one had not begun to answer, and only answers it had
    begun to write may arrive cut short."""
    before = uvicorn_pids(host, manager)
    victim = before[0]
    load, rc, err = under_load(host, f"kill -9 {victim}; sleep 3", vhost=VHOST, duration=6, concurrency=4)
    assert rc == 0, err
    after = wait_for_workers(host, manager, len(before), 1)
    deadline = time.monotonic() + 10
    while (victim in after or len(after) != len(before)) and time.monotonic() < deadline:
        time.sleep(0.5)
        after = uvicorn_pids(host, manager)
    assert victim not in after and len(after) == len(before), (before, after)
    assert load["requests"] > 50, load
    assert_only_in_hand_answers_lost(load, in_hand=4, context=journal(host, manager.unit))
    assert http_get(host, "/", vhost=VHOST)["status"] == 200


def test_check_mode_on_converged_host_changes_nothing(host, manager):
    assert_check_mode_changes_nothing("-e", f"app_process_manager={manager.name}")


def test_setting_for_the_other_alternative_manager_is_refused(host, manager):
    other = {"supervisor": {"circus_warmup_delay": 2}, "circus": {"supervisor_startsecs": 5}}[manager.name]
    (name,) = other
    run = manager.converge("-e", json.dumps(other))
    assert_refused_before_any_change(run, rf"{name} belongs to another process manager")


# What each manager leaves on a host for the app: the unit its processes
# run in, and its files.
OWNER_UNIT = {"systemd": f"{APP}.service", "supervisor": "supervisor.service", "circus": f"{APP}-circus.service"}
FILES = {
    "systemd": [f"/etc/systemd/system/{APP}.socket", f"/etc/systemd/system/{APP}.service", f"/etc/{APP}/gunicorn.conf.py"],
    "supervisor": [f"/etc/supervisor/conf.d/{APP}.conf"],
    "circus": [f"/etc/systemd/system/{APP}-circus.service", f"/etc/circus/{APP}"],
}
DAEMONS = {"systemd": [f"{APP}.socket", f"{APP}.service"], "supervisor": ["supervisor.service"], "circus": [f"{APP}-circus.service"]}


def assert_only(host, name):
    """The app runs under `name` alone: its processes, socket, files and
    units; nothing of the other two is left, and nginx uses its socket."""
    for unit in DAEMONS[name]:
        assert host.service(unit).is_running, unit
    units = set(host.check_output(f"ps -o unit= -u {APP}").split())
    assert units == {OWNER_UNIT[name]}, host.check_output(f"ps -o pid,unit,args -u {APP}")
    assert host.check_output(f"ls /run/{APP}").split() == [f"{name}.sock"]
    site = host.file(f"/etc/nginx/sites-available/{APP}.conf").content_string
    assert f"unix:/run/{APP}/{name}.sock" in site
    for other in set(FILES) - {name}:
        assert other not in site
        for path in FILES[other]:
            assert not host.file(path).exists, path
        for unit in DAEMONS[other]:
            assert not host.service(unit).is_running, unit
    answer = http_get(host, "/", vhost=VHOST)
    assert answer["status"] == 200, answer
    return answer


def assert_switch_under_load(host, target):
    """Switch the host to `target` with site.yml while requests flow: the
    switch serves while it happens (zero failed requests) and ends clean."""
    load, run = load_while(host, lambda: converge("-e", f"app_process_manager={target}"), vhost=VHOST)
    assert_ran(run)
    answer = assert_only(host, target)
    if target != "systemd":
        assert answer["json"]["pid"] in uvicorn_pids(host, Manager(target, OWNER_UNIT[target], ""))
    assert load["stopped"] == "stop-file", load
    assert load["requests"] > 100, load
    assert load["failed"] == 0, load
