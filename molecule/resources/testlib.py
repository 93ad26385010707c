"""Helpers shared by the scenarios' testinfra tests.

Everything here looks at the running hosts: HTTP through nginx from inside
the host, bounded load while a unit is disrupted, and ansible-playbook runs
against the scenario's own inventory.
"""

import json
import os
import re
import shlex
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import testinfra

PROJECT = Path(__file__).resolve().parents[2]
CONVERGE = Path(__file__).resolve().parent / "converge.yml"
# How Ansible and the tests reach the hosts (written by `make ssh`).
SSH_CONFIG = PROJECT / ".cache" / "ssh" / "config"

# Sends one request with python's http.client inside the host and prints
# the status line and body as JSON; a closed connection prints status null.
_HTTP_PROBE = r"""
import http.client, json, sys
host, path, port, src, headers = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], json.loads(sys.argv[5])
conn = http.client.HTTPConnection("127.0.0.1" if not src else src, port, timeout=10,
                                  source_address=None)
try:
    conn.request("GET", path, headers=dict({"Host": host}, **headers))
    r = conn.getresponse()
    print(json.dumps({"status": r.status, "headers": {k.lower(): v for k, v in r.getheaders()}, "body": r.read().decode()}))
except (ConnectionError, http.client.HTTPException) as exc:
    print(json.dumps({"status": None, "error": type(exc).__name__}))
"""


def podman(*args):
    return subprocess.run(["podman", *args], check=True, capture_output=True, text=True).stdout


def boot(name, image):
    """A fresh container `name` from `image`, booted (systemd's state:
    running or degraded, or what it was after 60 s)."""
    podman("rm", "-f", "-t", "2", name)
    podman("run", "-d", "--name", name, "--hostname", name, "--systemd=always", image, "/sbin/init")
    deadline = time.monotonic() + 60
    while True:
        state = subprocess.run(["podman", "exec", name, "systemctl", "is-system-running"],
                               capture_output=True, text=True, check=False).stdout.strip()
        if state in ("running", "degraded") or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


def ssh_host(name):
    """A test host by its container name, over SSH: every command goes over
    one multiplexed connection (about 10 ms a command; `podman exec` takes
    about 190 ms)."""
    # Connecting starts sshd through `podman exec`: allow for a loaded machine.
    return testinfra.get_host(f"ssh://{name}", ssh_config=str(SSH_CONFIG), timeout=60)


@pytest.fixture(scope="module")
def scenario_host(_testinfra_host):
    """The scenario's host (the one molecule's verifier is running for)."""
    return ssh_host(_testinfra_host.backend.get_hostname())


def http_get(host, path="/", vhost="localhost", address="", port=80, headers=None):
    """GET through nginx from inside the host; address defaults to 127.0.0.1."""
    cmd = f"python3 -c {shlex.quote(_HTTP_PROBE)} {shlex.quote(vhost)} {shlex.quote(path)} {port} {shlex.quote(address)} {shlex.quote(json.dumps(headers or {}))}"
    out = host.check_output(cmd)
    answer = json.loads(out)
    if answer.get("status") and answer["headers"].get("content-type", "").startswith("application/json"):
        answer["json"] = json.loads(answer["body"])
    return answer


def under_load(host, action, vhost="localhost", duration=8, lead=2, concurrency=4, path="/"):
    """Run `action` (a shell command) `lead` seconds into a bounded load
    through nginx; return the load's summary and the action's result."""
    script = (
        f"asgi-loadgen --url http://127.0.0.1{path} --host {shlex.quote(vhost)} "
        f"--duration {duration} --concurrency {concurrency} > /tmp/asgi-load.json & "
        f"sleep {lead}; {action}; rc=$?; wait; echo \"action-rc=$rc\" >&2; cat /tmp/asgi-load.json"
    )
    result = host.run(script)
    match = re.search(r"action-rc=(\d+)", result.stderr)
    assert match, f"load run did not finish: {result.stderr}"
    return json.loads(result.stdout.strip().splitlines()[-1]), int(match.group(1)), result.stderr


def assert_only_in_hand_answers_lost(load, in_hand, context=""):
    """What a kill -9 of a process that was answering may lose, and no
    more: the answers it had begun to write (the proxy has passed their
    headers on, so it cannot retry them; they arrive cut short), at most
    the `in_hand` requests it could hold. Nothing refused, no 5xx: every
    request it had not begun to answer is retried or queued."""
    five_hundreds = {status: n for status, n in load["statuses"].items() if status.startswith("5")}
    assert not five_hundreds, f"{load}\n{context}"
    assert load["failed"] == load["truncated"] <= in_hand, f"{load}\n{context}"


def journal(host, unit, lines=40):
    return host.run(f"journalctl -u {shlex.quote(unit)} -n {lines} --no-pager").stdout


def assert_active(host, unit):
    """A unit is active; on failure the message carries its journal."""
    service = host.service(unit)
    assert service.is_running, f"{unit} is not active:\n{journal(host, unit)}"


_MOUNT_OPTIONS = r"""
import sys
best = ("", "")
for line in open(f"/proc/{sys.argv[1]}/mountinfo"):
    fields = line.split()
    point, options = fields[4], fields[5]
    if (sys.argv[2] + "/").startswith(point.rstrip("/") + "/") and len(point) >= len(best[0]):
        best = (point, options)
print(best[1])
"""


def mount_options(host, pid, path):
    """Mount options of `path` as process `pid` sees it (its own mount
    namespace, so a service's sandbox shows)."""
    return host.check_output(f"python3 -c {shlex.quote(_MOUNT_OPTIONS)} {pid} {shlex.quote(path)}").split(",")


def exposure(host, unit):
    """systemd-analyze security's overall exposure of a unit."""
    report = host.check_output(f"systemd-analyze security --no-pager {shlex.quote(unit)}")
    match = re.search(rf"Overall exposure level for {re.escape(unit)}: (\d+\.\d+)", report)
    assert match, report
    return float(match.group(1)), report


def main_pid(host, unit):
    return int(host.check_output(f"systemctl show -p MainPID --value {shlex.quote(unit)}"))


def child_pids(host, pid):
    out = host.run(f"pgrep -P {pid}").stdout.split()
    return sorted(int(p) for p in out)


def _playbook_command(playbook_path, *args, fresh_facts=False):
    """argv and environment of ansible-playbook against the scenario's
    hosts, as molecule runs it; with fresh_facts, the facts are gathered
    and not cached (an in-memory cache for this run alone)."""
    env = dict(os.environ)
    if fresh_facts:
        env["ANSIBLE_CACHE_PLUGIN"] = "memory"
    ephemeral = os.environ.get("MOLECULE_EPHEMERAL_DIRECTORY", "")
    if ephemeral and Path(ephemeral, "ansible.cfg").exists():
        env["ANSIBLE_CONFIG"] = str(Path(ephemeral, "ansible.cfg"))
    env.setdefault("ANSIBLE_ROLES_PATH", str(PROJECT / "roles"))
    env.setdefault("ANSIBLE_COLLECTIONS_PATH", str(PROJECT / ".collections"))
    env["ANSIBLE_FORCE_COLOR"] = "0"
    env["ANSIBLE_NOCOLOR"] = "1"
    # The inventory directory: molecule's file plus the scenario's own
    # `hosts` (inventory names beyond the platforms, as in multi-app).
    inventory = str(Path(os.environ["MOLECULE_INVENTORY_FILE"]).parent)
    argv = ["ansible-playbook", "-i", inventory, str(playbook_path), *args]
    return argv, env


def playbook(playbook_path, *args, fresh_facts=False):
    """Run ansible-playbook against the scenario's hosts, as molecule does."""
    argv, env = _playbook_command(playbook_path, *args, fresh_facts=fresh_facts)
    return subprocess.run(argv, cwd=PROJECT, env=env, capture_output=True, text=True, check=False)


def inventory_vars(host_name):
    """A host's variables as the scenario's inventory gives them
    (ansible-inventory, before any templating)."""
    argv, env = _playbook_command("unused")
    argv = ["ansible-inventory", "-i", argv[2], "--host", host_name]
    return json.loads(subprocess.run(argv, cwd=PROJECT, env=env, capture_output=True, text=True, check=True).stdout)


def expected_environ(settings):
    """What each of app_env / app_secrets must be in the app's environment:
    strings as written, everything else as JSON (UTF-8, not escaped)."""
    return {name: value if isinstance(value, str) else json.dumps(value, ensure_ascii=False) for name, value in settings.items()}


def start_playbook(playbook_path, *args):
    """The same, started in the background: a Popen whose output is text."""
    argv, env = _playbook_command(playbook_path, *args)
    return subprocess.Popen(argv, cwd=PROJECT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def recap(output):
    """Sum the PLAY RECAP counters of an ansible-playbook run."""
    totals = {}
    for line in output.splitlines():
        if re.match(r"^\S+\s+:\s+ok=", line):
            for key, value in re.findall(r"(\w+)=(\d+)", line):
                totals[key] = totals.get(key, 0) + int(value)
    return totals


def systemd_version(host):
    """systemd's major version on the host (252 on Debian 12, 257 on 13)."""
    return int(host.check_output("systemctl --version").split()[1])


def vcpus(host):
    """vCPUs as Ansible counts them (processor entries in /proc/cpuinfo)."""
    return int(host.check_output("grep -c ^processor /proc/cpuinfo"))


def load_while(host, action, vhost="localhost", path="/", duration=280, concurrency=2, pause=0.02, lead=2):
    """Bounded load through nginx while `action()` runs on the controller
    (a playbook). The load runs in the host as a transient unit and stops
    when the action returns (`stopped` is then "stop-file"), or at
    `duration` seconds at the latest. Returns the load's summary and the
    action's result."""
    host.check_output(
        "rm -f /tmp/asgi-load.stop /tmp/asgi-load.json; "
        "systemd-run --unit asgi-load --collect --quiet sh -c "
        + shlex.quote(
            f"asgi-loadgen --url http://127.0.0.1{path} --host {shlex.quote(vhost)} "
            f"--duration {duration} --concurrency {concurrency} --pause {pause} "
            "--max-requests 200000 --stop-file /tmp/asgi-load.stop > /tmp/asgi-load.json"
        )
    )
    host.run(f"sleep {lead}")
    try:
        result = action()
    finally:
        host.run("touch /tmp/asgi-load.stop; while systemctl is-active -q asgi-load; do sleep 0.2; done")
    return json.loads(host.file("/tmp/asgi-load.json").content_string), result


def converge(*args, fresh_facts=False):
    """site.yml through molecule's converge playbook, with extra arguments."""
    return playbook(CONVERGE, *args, fresh_facts=fresh_facts)


def assert_check_mode_changes_nothing(*args):
    run = converge("--check", "--diff", *args)
    totals = recap(run.stdout)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert totals.get("changed") == 0 and totals.get("failed") == 0, run.stdout[-5000:]


def assert_ran(run):
    """An ansible-playbook run succeeded; on failure the message carries its end."""
    assert run.returncode == 0, run.stdout[-5000:] + run.stderr[-2000:]
    return recap(run.stdout)


def assert_refused_before_any_change(run, pattern):
    """A run failed in the checks: the error matches, nothing changed and
    the provisioning play never started."""
    output = run.stdout + run.stderr
    totals = recap(run.stdout)
    assert run.returncode != 0
    assert re.search(pattern, output), output[-3000:]
    assert totals.get("changed", 0) == 0 and totals.get("failed", 0) >= 1, output[-3000:]
    assert "PLAY [Provision the app servers]" not in output


# What /etc/os-release and /etc/debian_version say on platforms the roles
# do not support (Ubuntu ships a debian_version too).
OTHER_PLATFORMS = {
    "Debian 11": (
        'ID=debian\nNAME="Debian GNU/Linux"\nVERSION_ID="11"\nVERSION_CODENAME=bullseye\n',
        "11.11\n",
    ),
    "Ubuntu 24.04": (
        'ID=ubuntu\nID_LIKE=debian\nNAME="Ubuntu"\nVERSION_ID="24.04"\nVERSION_CODENAME=noble\n',
        "trixie/sid\n",
    ),
}
PLATFORM_FILES = ["/etc/os-release", "/etc/debian_version"]


@contextmanager
def posing_as(host, platform):
    """The host claims to be `platform` (its two release files replaced)
    until the block ends; a run with fresh_facts=True sees that (the
    machine and its boot are the same, so a run would use its cached
    facts otherwise), and leaves no such facts in the cache."""
    for path, content in zip(PLATFORM_FILES, OTHER_PLATFORMS[platform]):
        host.check_output(f"mv {path} {path}.asgi-test && printf '%b' '{content}' > {path}")
    try:
        yield
    finally:
        for path in PLATFORM_FILES:
            host.run(f"test -e {path}.asgi-test && mv -f {path}.asgi-test {path}")


class Drift:
    """A file with a line appended by hand (see drifted)."""

    def __init__(self, host, path):
        self.host, self.path = host, path
        self.wanted = host.check_output(f"sha256sum {path}")
        host.check_output(f"cp -p {path} {path}.asgi-test && echo '# drifted by hand' >> {path}")

    def still_drifted(self):
        return self.host.check_output(f"sha256sum {self.path}") != self.wanted


@contextmanager
def drifted(host, path):
    """`path` drifted from what its role wrote until the block ends, then
    put back as it was (by hand: no run of the role)."""
    drift = Drift(host, path)
    try:
        yield drift
    finally:
        host.run(f"mv -f {path}.asgi-test {path}")
    assert host.check_output(f"sha256sum {path}") == drift.wanted


def assert_platform_refused(run, platform, host_name):
    """A site.yml run stopped in the checks on `host_name`, naming the
    platform found and the supported ones, and changed nothing."""
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    assert f"Unsupported platform {platform}" in output, output[-3000:]
    assert "this role supports Debian 12 and 13" in output, output[-3000:]
    assert re.search(rf"fatal: \[{re.escape(host_name)}\]", output), output[-3000:]
    assert recap(run.stdout).get("changed", 0) == 0, output[-3000:]
    assert "PLAY [Provision" not in output, output[-3000:]
