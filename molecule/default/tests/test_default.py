"""molecule/default: gunicorn + uvicorn workers under systemd socket
activation behind nginx, checked on the running host."""

import json
import os
import shlex
from pathlib import Path

import pytest
from testlib import (
    assert_active,
    assert_check_mode_changes_nothing,
    assert_only_in_hand_answers_lost,
    assert_ran,
    child_pids,
    exposure,
    http_get,
    journal,
    main_pid,
    mount_options,
    playbook,
    systemd_version,
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


# The distro's own interpreter, per Debian release.
INTERPRETERS = {"12": "/usr/bin/python3.11", "13": "/usr/bin/python3.13"}


def test_app_runs_on_the_distro_interpreter(host):
    release = host.check_output("cut -d. -f1 /etc/debian_version")
    expected = INTERPRETERS[release]
    # The release's venv is built on it, and the running master executes it.
    assert host.check_output(f"readlink -f /srv/{APP}/current/venv/bin/python") == expected
    master = main_pid(host, f"{APP}.service")
    assert host.check_output(f"readlink -f /proc/{master}/exe") == expected


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
    environ = host.check_output(f"tr '\\0' '\\n' < /proc/{master}/environ")
    assert "HELLO_API_TOKEN=s3cr3t-molecule-token" in environ
    other = host.run(f"runuser -u nobody -- cat /etc/{APP}/app.env")
    assert other.rc != 0


@pytest.mark.parametrize(
    "target",
    [
        f"/srv/{APP}/current/app",
        f"/srv/{APP}/current/venv",
        f"/srv/{APP}/current/venv/lib",
        f"/srv/{APP}/releases",
        f"/etc/{APP}",
        "/etc/nginx",
        "/etc/nginx/sites-available",
        "/etc/nginx/sites-enabled",
        "/etc/nginx/conf.d",
    ],
)
def test_app_user_cannot_change_code_venv_or_nginx_config(host, target):
    assert host.file(target).is_directory
    attempt = host.run(f"runuser -u {APP} -- touch {target}/.written-by-app")
    assert attempt.rc != 0 and "Permission denied" in attempt.stderr


@pytest.mark.parametrize(
    "target",
    [f"/srv/{APP}/current/app/main.py", f"/etc/nginx/sites-available/{APP}.conf", "/etc/nginx/nginx.conf"],
)
def test_app_user_cannot_change_code_or_nginx_files(host, target):
    attempt = host.run(f"runuser -u {APP} -- sh -c 'echo >> {target}'")
    assert attempt.rc != 0 and "Permission denied" in attempt.stderr


def test_service_sandbox_exposure_is_at_most_2(host):
    level, report = exposure(host, f"{APP}.service")
    assert level <= 2.0, report
    # The sandbox is in force on the running service, which serves.
    shown = host.check_output(
        f"systemctl show -p ProtectSystem,PrivateUsers,NoNewPrivileges,CapabilityBoundingSet,RestrictNamespaces {APP}.service"
    )
    assert "ProtectSystem=strict" in shown and "PrivateUsers=yes" in shown and "NoNewPrivileges=yes" in shown
    assert "CapabilityBoundingSet=\n" in shown + "\n", shown
    assert_active(host, f"{APP}.service")
    assert http_get(host, "/", vhost=VHOST)["status"] == 200


def test_service_cannot_write_its_code_even_as_owner(host):
    # In the service's mount namespace the release tree is read-only
    # (ProtectSystem=strict), whatever its permissions; the state
    # directory is the one writable place.
    master = main_pid(host, f"{APP}.service")
    namespaces = host.check_output(f"readlink /proc/{master}/ns/mnt /proc/1/ns/mnt").split()
    if namespaces[0] == namespaces[1] and systemd_version(host) >= 257:
        # systemd 257 (Debian 13) gives the service its user namespace in
        # this unprivileged container but no mount namespace (it logs the
        # same for ProtectHostname); on a host the mounts below apply.
        pytest.skip("systemd 257 sets up no mount namespace inside this container")
    assert "ro" in mount_options(host, master, f"/srv/{APP}/releases")
    assert "ro" in mount_options(host, master, "/etc")
    assert "rw" in mount_options(host, master, f"/var/lib/{APP}")


def test_credentials_reach_the_app_but_not_its_environment(host):
    answer = http_get(host, "/credentials", vhost=VHOST)
    assert answer["status"] == 200, answer
    assert answer["json"]["credentials"] == {"hello_db_password": len("cr3dential-molecule-pw")}
    master = main_pid(host, f"{APP}.service")
    environ = host.check_output(f"tr '\\0' '\\n' < /proc/{master}/environ")
    assert "CREDENTIALS_DIRECTORY=" in environ and "cr3dential" not in environ
    stored = host.file(f"/etc/{APP}/credentials/hello_db_password")
    assert (stored.user, stored.group, stored.mode) == ("root", "root", 0o600)
    assert host.run(f"runuser -u {APP} -- cat /etc/{APP}/credentials/hello_db_password").rc != 0


def test_dotfiles_are_never_served_and_directories_never_listed(host):
    static = f"/srv/{APP}/current/app/static"
    host.check_output(f"echo top-secret > {static}/.secret && mkdir -p {static}/listing && touch {static}/listing/a.txt")
    try:
        for path in ["/static/.secret", "/.env", "/.git/config", "/static/listing/../.secret"]:
            answer = http_get(host, path, vhost=VHOST)
            assert answer["status"] == 404 and "top-secret" not in answer["body"], (path, answer)
            # nginx answered, the app never saw it (its 404s are JSON).
            assert answer["headers"]["content-type"].startswith("text/html"), (path, answer)
        for path in ["/static/", "/static/listing/"]:
            answer = http_get(host, path, vhost=VHOST)
            assert answer["status"] == 403 and "a.txt" not in answer["body"], (path, answer)
    finally:
        host.run(f"rm -rf {static}/.secret {static}/listing")


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


def test_access_log_keeps_every_request_of_a_load_in_the_journal(host):
    """With app_access_log, each request is a journal line: 20 s of load
    is well above journald's default limit for a service (10,000 lines in
    30 s, times about 3.5 with this much free disk), which the unit raises.
    The count waits for journald to take in the burst."""
    # Nothing else asks for /request meanwhile (uvicorn logs the path
    # without its query string).
    since = host.check_output("date +%s")
    load, rc, err = under_load(host, "true", vhost=VHOST, duration=20, concurrency=4, path="/request")
    assert rc == 0 and load["failed"] == 0 and load["requests"] > 0, (load, err)
    count = f"journalctl -u {APP} -o cat --no-pager --since=@{since} | grep -cF '\"GET /request HTTP/1.1\" 200'"
    lines = host.run(
        f"for i in $(seq 60); do n=$({count}); [ \"$n\" -ge {load['ok']} ] && break; sleep 0.5; done; echo $n"
    )
    assert int(lines.stdout.split()[-1]) == load["ok"], (load, journal(host, APP))


def test_killed_master_comes_back_and_the_socket_queues_meanwhile(host):
    master = main_pid(host, f"{APP}.service")
    workers = child_pids(host, master)
    # While systemd restarts the service (RestartSec=1) no new process
    # listens: new connections wait in the socket's backlog and are
    # answered after. The old workers finish what they hold, then exit.
    load, rc, err = under_load(host, f"kill -9 {master}; sleep 4", vhost=VHOST, duration=8, concurrency=4)
    assert rc == 0, err
    assert_active(host, f"{APP}.service")
    assert main_pid(host, f"{APP}.service") != master
    assert not [pid for pid in workers if host.file(f"/proc/{pid}").exists], workers
    assert int(host.check_output(f"systemctl show -p NRestarts --value {APP}.service")) >= 1
    assert load["requests"] > 50, load
    assert load["failed"] == 0, f"{load}\n{journal(host, APP)}"


def test_killed_worker_is_replaced_and_loses_only_what_it_was_writing(host):
    """kill -9 of a worker: nginx retries every request the worker had not
    begun to answer on another worker; an answer it had begun to write
    (headers passed on) arrives cut short. With 4 clients it holds at
    most 4."""
    master = main_pid(host, f"{APP}.service")
    workers = child_pids(host, master)
    load, rc, err = under_load(host, f"kill -9 {workers[0]}; sleep 3", vhost=VHOST, duration=8, concurrency=4)
    assert rc == 0, err
    after = child_pids(host, master)
    assert main_pid(host, f"{APP}.service") == master
    assert workers[0] not in after and len(after) == len(workers), (workers, after)
    assert load["requests"] > 50, load
    assert_only_in_hand_answers_lost(load, in_hand=4, context=journal(host, APP))


def test_broken_nginx_snippet_fails_the_run_and_nginx_keeps_serving(host):
    files = f"/etc/nginx/sites-available/{APP}.conf /etc/nginx/nginx.conf /etc/nginx/conf.d/asgi-defaults.conf"
    before = host.check_output(f"sha256sum {files}")
    nginx = main_pid(host, "nginx.service")
    run = playbook(CONVERGE, "-e", json.dumps({"nginx_extra_site_config": "location /broken { no_such_directive on; }"}))
    output = run.stdout + run.stderr
    assert run.returncode != 0
    assert "nginx -t refused the new configuration" in output and "no_such_directive" in output, output[-3000:]
    # The previous files are back (nothing staged or kept left behind),
    # nginx was not reloaded, and it still answers with the previous
    # configuration.
    assert host.check_output(f"sha256sum {files}") == before
    assert host.check_output("ls -A /etc/nginx/sites-available").split() == ["default", f"{APP}.conf"]
    assert host.check_output("ls -A /etc/nginx/conf.d").split() == ["asgi-defaults.conf"]
    assert host.check_output("find /etc/nginx -name '.*.asgi-*'") == ""
    assert host.run("nginx -t").rc == 0
    assert main_pid(host, "nginx.service") == nginx
    assert http_get(host, "/", vhost=VHOST)["status"] == 200


def test_a_hand_made_file_where_the_site_link_goes_is_kept_and_named(host):
    """An operator copied the site into sites-enabled by hand: the run
    fails naming that path, before nginx is reloaded, and the file stays."""
    link = f"/etc/nginx/sites-enabled/{APP}.conf"
    host.check_output(f"cp --remove-destination /etc/nginx/sites-available/{APP}.conf {link}")
    host.check_output(f"echo '# kept: hand-made' >> {link}")
    before = host.check_output(f"sha256sum {link}")
    nginx = main_pid(host, "nginx.service")
    try:
        run = playbook(CONVERGE)
        output = run.stdout + run.stderr
        assert run.returncode != 0
        assert f"{link} is not a link" in output and "move it away" in output, output[-3000:]
        assert "nginx -t refused" not in output, output[-3000:]
        assert host.check_output(f"sha256sum {link}") == before
        assert not host.file(link).is_symlink
        assert main_pid(host, "nginx.service") == nginx
        assert http_get(host, "/", vhost=VHOST)["status"] == 200
    finally:
        host.run(f"rm -f {link}")
    run = playbook(CONVERGE)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    assert host.file(link).linked_to == f"/etc/nginx/sites-available/{APP}.conf"
    assert http_get(host, "/", vhost=VHOST)["status"] == 200


def test_check_mode_on_converged_host_changes_nothing(host):
    assert_check_mode_changes_nothing()


# Each role's documented tag selects its own files: four drifted files,
# and each run with one tag puts back that role's file alone.
TAGGED_FILES = {
    "python_configure": "/etc/pip.conf",
    "app_configure": f"/etc/{APP}/app.env",
    "gunicorn_configure": f"/etc/{APP}/gunicorn.conf.py",
    "nginx_configure": "/etc/nginx/conf.d/asgi-defaults.conf",
}


def test_each_roles_configure_tag_puts_back_its_own_files_alone(host):
    if os.environ.get("MOLECULE_DISTRO", "debian12") != "debian12":
        pytest.skip("tags are chosen on the controller: shown once, on Debian 12")
    wanted = {path: host.check_output(f"sha256sum {path}") for path in TAGGED_FILES.values()}
    try:
        for path in TAGGED_FILES.values():
            host.run_expect([0], f"echo '# drifted by hand' >> {path}")
        fixed = []
        for tag, path in TAGGED_FILES.items():
            run = playbook(CONVERGE, "--tags", tag)
            assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
            fixed.append(path)
            for other in TAGGED_FILES.values():
                now = host.check_output(f"sha256sum {other}")
                assert (now == wanted[other]) == (other in fixed), (tag, other)
    finally:
        assert_ran(playbook(CONVERGE))
    assert http_get(host, "/", vhost=VHOST)["status"] == 200


def test_the_run_tags_start_what_was_stopped(host):
    """gunicorn_run starts the app's socket and service, nginx_run nginx,
    each leaving the other alone."""
    if os.environ.get("MOLECULE_DISTRO", "debian12") != "debian12":
        pytest.skip("tags are chosen on the controller: shown once, on Debian 12")
    try:
        host.run_expect([0], f"systemctl stop {APP}.socket {APP}.service nginx.service")
        assert_ran(playbook(CONVERGE, "--tags", "gunicorn_run"))
        assert host.service(f"{APP}.socket").is_running and not host.service("nginx").is_running
        assert_ran(playbook(CONVERGE, "--tags", "nginx_run"))
        assert host.service("nginx").is_running
    finally:
        assert_ran(playbook(CONVERGE))
    assert http_get(host, "/", vhost=VHOST)["status"] == 200


# The next tests converge the host with other inputs; they run last, in
# this order, and the last one converges it back to the scenario's own.


def test_secrets_never_appear_in_verbose_output(host):
    # New values, so the tasks that write them really run (and restart the
    # app); the next converge puts the scenario's own values back.
    token, password = "vvv-probe-token-5d1e", "vvv-probe-password-93ab"
    extra = {"app_secrets": {"HELLO_API_TOKEN": token}, "app_credentials": {"hello_db_password": password}}
    run = playbook(CONVERGE, "-vvv", "-e", json.dumps(extra))
    assert run.returncode == 0, run.stdout[-3000:]
    output = run.stdout + run.stderr
    assert output.count("ESTABLISH SSH CONNECTION") > 20, output[-3000:]  # it was verbose (-vvv)
    assert token not in output and password not in output
    assert "s3cr3t-molecule-token" not in output and "cr3dential-molecule-pw" not in output
    # Nor their digests: the files holding them are compared on the
    # controller, and no task's arguments or result carries a digest.
    for line in host.check_output(f"sha1sum /etc/{APP}/app.env /etc/{APP}/credentials/hello_db_password").splitlines():
        digest, path = line.split()
        assert digest not in output, path
    # The new values did reach the app.
    master = main_pid(host, f"{APP}.service")
    assert f"HELLO_API_TOKEN={token}" in host.check_output(f"tr '\\0' '\\n' < /proc/{master}/environ")
    answer = http_get(host, "/credentials", vhost=VHOST)
    assert answer["json"]["credentials"] == {"hello_db_password": len(password)}


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
