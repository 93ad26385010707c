"""molecule/default: gunicorn + uvicorn workers under systemd socket
activation behind nginx, checked on the running host."""

import json
import re
import shlex
from pathlib import Path

import pytest
from testlib import (
    assert_check_mode_changes_nothing,
    assert_active,
    child_pids,
    http_get,
    journal,
    main_pid,
    playbook,
    recap,
    under_load,
    vcpus,
)

APP = "hello"
VHOST = "hello.test"
SOCKET = f"/run/{APP}/systemd.sock"
CONVERGE = Path(__file__).resolve().parents[2] / "resources" / "converge.yml"


def test_socket_listens_and_only_nginx_may_connect(host):
    assert_active(host, f"{APP}.socket")
    sock = host.file(SOCKET)
    assert sock.is_socket
    assert (sock.user, sock.group, sock.mode) == ("root", "www-data", 0o660)
    assert SOCKET in host.check_output("ss -xlnH")
    # The app's own user is not in www-data: it cannot reach the socket.
    denied = host.run(f"runuser -u {APP} -- python3 -c \"import socket; socket.socket(socket.AF_UNIX).connect('{SOCKET}')\"")
    assert denied.rc != 0 and "Permission denied" in denied.stderr


def test_service_runs_as_app_user_with_computed_workers(host):
    assert_active(host, f"{APP}.service")
    master = main_pid(host, f"{APP}.service")
    assert host.process.get(pid=master).user == APP
    cpus = vcpus(host)
    expected = max(2, cpus * 1)
    workers = child_pids(host, master)
    assert len(workers) == expected, f"{workers} for {cpus} vCPUs:\n{journal(host, APP)}"
    for pid in workers:
        assert host.process.get(pid=pid).user == APP


def test_request_through_nginx_reaches_the_app(host):
    answer = http_get(host, "/", vhost=VHOST)
    assert answer["status"] == 200, answer
    assert answer["json"]["app"] == "hello"
    assert answer["json"]["message"] == "Hello from molecule"
    assert answer["json"]["version"] == "1.0.0"
    assert answer["headers"]["server"] == "nginx"  # server_tokens off: no version


def test_app_sees_real_client_address_and_scheme(host):
    # Connect over the host's own non-loopback address, and try to forge one.
    address = host.interface("eth0").addresses[0]
    answer = http_get(host, "/request", vhost=VHOST, address=address, headers={"X-Forwarded-For": "203.0.113.9"})
    assert answer["status"] == 200, answer
    assert answer["json"]["client"] == address
    assert answer["json"]["scheme"] == "http"
    assert answer["json"]["host"] == VHOST


def test_static_files_come_from_nginx(host):
    answer = http_get(host, "/static/hello.txt", vhost=VHOST)
    assert answer["status"] == 200 and answer["body"] == "served by nginx, not by the app\n"
    assert "expires" in answer["headers"]
    # No directory listing, and the app never saw the request.
    assert http_get(host, "/static/", vhost=VHOST)["status"] == 403
    assert "/static/hello.txt" not in journal(host, APP, 200)


def test_request_body_limit(host):
    probe = (
        "import http.client; c=http.client.HTTPConnection('127.0.0.1',80,timeout=10); "
        f"c.request('POST','/request',body=b'x'*(2*1024*1024),headers={{'Host':'{VHOST}'}}); "
        "print(c.getresponse().status)"
    )
    assert host.check_output(f'python3 -c "{probe}"') == "413"


def test_unknown_host_is_rejected(host):
    assert http_get(host, "/", vhost="intruder.example")["status"] is None
    assert http_get(host, "/", vhost=VHOST)["status"] == 200


def test_websocket_upgrade_passes_through_nginx(host):
    probe = (
        "import socket; s=socket.create_connection(('127.0.0.1',80),5); "
        f"s.sendall(b'GET /ws HTTP/1.1\\r\\nHost: {VHOST}\\r\\nUpgrade: websocket\\r\\nConnection: Upgrade\\r\\n"
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\\r\\nSec-WebSocket-Version: 13\\r\\n\\r\\n'); "
        "print(s.recv(200).decode().splitlines()[0])"
    )
    assert "101" in host.check_output(f'python3 -c "{probe}"')


def test_restart_under_load_drops_nothing(host):
    before = main_pid(host, f"{APP}.service")
    load, rc, err = under_load(host, f"systemctl restart {APP}.service", vhost=VHOST)
    assert rc == 0, err
    after = main_pid(host, f"{APP}.service")
    assert after != before
    assert load["requests"] > 50, load
    assert load["failed"] == 0, f"{load}\n{journal(host, APP)}"


def test_reload_replaces_workers_without_dropping(host):
    master = main_pid(host, f"{APP}.service")
    old_workers = set(child_pids(host, master))
    load, rc, err = under_load(host, f"systemctl reload {APP}.service; sleep 3", vhost=VHOST)
    assert rc == 0, err
    assert main_pid(host, f"{APP}.service") == master
    new_workers = set(child_pids(host, master))
    assert new_workers and not (new_workers & old_workers), (old_workers, new_workers)
    assert load["failed"] == 0 and load["requests"] > 50, load
    # Answers came from both generations of workers.
    served_by = {int(pid) for pid in load["pids"]}
    assert served_by & old_workers and served_by & new_workers, (served_by, old_workers, new_workers)


def test_env_file_is_private_and_loaded(host):
    env = host.file(f"/etc/{APP}/app.env")
    assert (env.user, env.group, env.mode) == ("root", APP, 0o640)
    master = main_pid(host, f"{APP}.service")
    environ = host.check_output(f"runuser -u {APP} -- cat /proc/{master}/environ | tr '\\0' '\\n'")
    assert "HELLO_API_TOKEN=s3cr3t-molecule-token" in environ
    other = host.run(f"runuser -u nobody -- cat /etc/{APP}/app.env")
    assert other.rc != 0


@pytest.mark.parametrize("path", ["current/app", "current/venv", "current/venv/lib", "releases"])
def test_app_user_cannot_change_code_or_venv(host, path):
    target = f"/srv/{APP}/{path}"
    assert host.file(target).is_directory
    attempt = host.run(f"runuser -u {APP} -- touch {target}/.written-by-app")
    assert attempt.rc != 0 and "Permission denied" in attempt.stderr


def test_current_is_a_link_to_a_complete_release(host):
    current = host.file(f"/srv/{APP}/current")
    assert current.is_symlink and current.linked_to.startswith(f"/srv/{APP}/releases/")
    assert host.file(f"{current.linked_to}/.release").exists
    answer = http_get(host, "/", vhost=VHOST)
    assert answer["json"]["release"] == Path(current.linked_to).name


def test_prestart_ran_once_as_app_user_for_this_release(host):
    log = host.file(f"/var/lib/{APP}/prestart.log")
    release = Path(host.file(f"/srv/{APP}/current").linked_to).name
    assert log.user == APP
    assert log.content_string.splitlines() == [f"prestart of {release}"]


def test_control_socket_needs_no_home_directory(host):
    ctl = host.file(f"/run/{APP}-gunicorn/gunicorn.ctl")
    assert ctl.is_socket and ctl.user == APP
    assert not host.file(f"/var/lib/{APP}/.gunicorn").exists


def test_access_log_goes_to_the_journal(host):
    marker = "journal-probe-7f3a"
    assert http_get(host, f"/health?{marker}", vhost=VHOST)["status"] == 200
    host.run("sleep 1")
    assert marker in journal(host, APP, 200)


def test_check_mode_on_converged_host_changes_nothing(host):
    assert_check_mode_changes_nothing()


@pytest.mark.parametrize(
    ("extra", "names"),
    [
        ({"app_workers": "many"}, "app_workers"),
        ({"app_workers": -2}, "app_workers"),
        ({"gunicorn_worker_class": "sync"}, "gunicorn_worker_class"),
        ({"app_module": "main"}, "app_module"),
        ({"app_module": "main:app; rm -rf /"}, "app_module"),
        ({"nginx_server_names": []}, "nginx_server_names"),
    ],
)
def test_bad_input_fails_before_any_change(host, extra, names):
    before = host.check_output(f"sha256sum /etc/{APP}/gunicorn.conf.py /etc/nginx/sites-available/{APP}.conf")
    run = playbook(CONVERGE, "-e", json.dumps(extra))
    output = run.stdout + run.stderr
    totals = recap(run.stdout)
    assert run.returncode != 0
    # The error names the variable, and no play after the checks started.
    assert re.search(rf"(argument '{names}'|{names}\b.*must)", output), output[-3000:]
    assert totals.get("changed", 0) == 0 and totals.get("failed", 0) >= 1, output[-3000:]
    assert "PLAY [Provision the app servers]" not in output
    after = host.check_output(f"sha256sum /etc/{APP}/gunicorn.conf.py /etc/nginx/sites-available/{APP}.conf")
    assert before == after


# The next tests converge the host with other inputs; they run last, in
# this order, and the last one converges it back to the scenario's own.
GIT_COMMIT = "-c user.email=ci@example.invalid -c user.name=ci commit -qm"


def test_code_from_a_git_repository(host):
    host.run("apt-get install -y -qq git >/dev/null 2>&1")
    assert host.run(
        "rm -rf /opt/hello-git && mkdir -p /opt/hello-git && cd /opt/hello-git"
        f" && cp /srv/{APP}/current/app/main.py /srv/{APP}/current/app/requirements.txt ."
        f" && echo 2.0.0-git > VERSION && git init -q -b main && git add -A && git {GIT_COMMIT} v2"
    ).rc == 0
    run = playbook(CONVERGE, "-e", "app_source=git", "-e", "app_git_repo=file:///opt/hello-git")
    assert run.returncode == 0, run.stdout[-3000:]
    answer = http_get(host, "/", vhost=VHOST)
    assert answer["json"]["version"] == "2.0.0-git"
    assert answer["json"]["release"] == Path(host.file(f"/srv/{APP}/current").linked_to).name


PYPROJECT = """[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "hello-pkg"
version = "3.0.0"
dependencies = ["fastapi==0.165.0"]

[tool.setuptools.package-data]
hello_pkg = ["VERSION"]
"""


def test_code_from_a_package_spec(host):
    assert host.run(
        "rm -rf /opt/hello-pkg && mkdir -p /opt/hello-pkg/hello_pkg && cd /opt/hello-pkg"
        f" && cp /srv/{APP}/current/app/main.py hello_pkg/ && touch hello_pkg/__init__.py"
        f" && echo 3.0.0-pkg > hello_pkg/VERSION && printf %s {shlex.quote(PYPROJECT)} > pyproject.toml"
    ).rc == 0
    run = playbook(
        CONVERGE, "-e", "app_source=package", "-e", "app_package_spec=/opt/hello-pkg", "-e", "app_module=hello_pkg.main:app"
    )
    assert run.returncode == 0, run.stdout[-3000:]
    answer = http_get(host, "/", vhost=VHOST)
    assert answer["json"]["version"] == "3.0.0-pkg"
    site_packages = host.run(f"ls -d /srv/{APP}/current/venv/lib/python3*/site-packages/hello_pkg")
    assert site_packages.rc == 0

def test_development_mode_reloads_on_change_then_production_returns(host):
    # Runs last: it converges the host into development mode and back.
    dev = playbook(CONVERGE, "-e", "app_environment=development")
    assert dev.returncode == 0, dev.stdout[-3000:]
    command = host.check_output(f"ps -o args= -p {main_pid(host, f'{APP}.service')}")
    assert "uvicorn --fd 3 --reload" in command and f"--reload-dir /srv/{APP}/current/app" in command
    assert http_get(host, "/", vhost=VHOST)["status"] == 200
    before = http_get(host, "/", vhost=VHOST)["json"]["pid"]
    host.run(f"touch /srv/{APP}/current/app/main.py; sleep 3")
    after = http_get(host, "/", vhost=VHOST)
    assert after["status"] == 200 and after["json"]["pid"] != before, journal(host, APP)

    prod = playbook(CONVERGE)
    assert prod.returncode == 0, prod.stdout[-3000:]
    command = host.check_output(f"ps -o args= -p {main_pid(host, f'{APP}.service')}")
    assert "gunicorn --config" in command and "--reload" not in command
    assert http_get(host, "/", vhost=VHOST)["status"] == 200
