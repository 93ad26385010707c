"""molecule/cluster: a load balancer in front of three app servers.

Deploy, rolling restart and rollback run under bounded load sent through
the load balancer for the whole run: zero failed requests, and the
answers (the sample app reports its version, release and host) show the
switch. A broken release is rejected with the first host back on the
previous one; a second deploy is locked out while one runs.
"""

import json
import shlex
import shutil
import time

import pytest
from testlib import (
    PROJECT,
    assert_check_mode_changes_nothing,
    assert_platform_refused,
    assert_ran,
    converge,
    http_get,
    load_while,
    main_pid,
    playbook,
    posing_as,
    recap,
    ssh_host,
    start_playbook,
    under_load,
)

testinfra_hosts = ["asgi-lb"]

VHOST = "hello.cluster.test"
APPS = ["asgi-app1", "asgi-app2", "asgi-app3"]
DEPLOY = PROJECT / "playbooks" / "deploy.yml"
ROLLBACK = PROJECT / "playbooks" / "rollback.yml"
ROLLING_RESTART = PROJECT / "playbooks" / "rolling_restart.yml"
DRAIN = PROJECT / "playbooks" / "drain.yml"
LOCK = "/var/lib/asgi-deploy/hello/lock"
DEPLOY_LOG = "/var/log/asgi-deploy/hello.log"
SAMPLE = PROJECT / "examples" / "hello_app"
VERSION_1 = (SAMPLE / "VERSION").read_text().strip()


@pytest.fixture(scope="module")
def apps():
    return {name: ssh_host(name) for name in APPS}


@pytest.fixture(scope="module")
def releases(tmp_path_factory):
    """Sources of the sample app as 2.0.0, as a 3.0.0 whose health
    endpoint answers 500 (it starts and serves `/` otherwise), and as a
    4.0.0 that crashes on start: it imports (so it passes the build's
    import check) but its startup fails when a server runs it."""
    root = tmp_path_factory.mktemp("releases")
    sources = {}
    for version in ("2.0.0", "3.0.0", "4.0.0"):
        target = root / version
        shutil.copytree(SAMPLE, target, ignore=shutil.ignore_patterns("__pycache__"))
        (target / "VERSION").write_text(version + "\n")
        sources[version] = target
    main = sources["3.0.0"] / "main.py"
    code = main.read_text()
    healthy = 'return {"status": "ok", "version": VERSION}'
    assert healthy in code
    main.write_text(
        code.replace(healthy, 'from fastapi.responses import JSONResponse\n    return JSONResponse({"status": "broken"}, 500)')
    )
    crashing = sources["4.0.0"] / "main.py"
    crashing.write_text(
        crashing.read_text()
        + "\n\nfrom contextlib import asynccontextmanager\n\n\n@asynccontextmanager\n"
        + "async def no_database(app):\n"
        + '    raise RuntimeError("release 4.0.0 cannot start: no database")\n    yield\n\n\n'
        + "app.router.lifespan_context = no_database\n"
    )
    return sources


def live(app):
    return app.check_output("basename $(readlink /srv/hello/current)")


def previous(app):
    return app.check_output("basename $(readlink /srv/hello/previous)")


def last_log_entry(app):
    return json.loads(app.check_output(f"tail -n 1 {DEPLOY_LOG}"))


def log_lines(app):
    return int(app.check_output(f"if [ -e {DEPLOY_LOG} ]; then wc -l < {DEPLOY_LOG}; else echo 0; fi"))


def masters(apps):
    return {name: main_pid(app, "hello.service") for name, app in apps.items()}


def lives(apps):
    return {name: live(app) for name, app in apps.items()}


def assert_all_in_service(host):
    entries = host.check_output("grep -h '^server ' /etc/nginx/asgi-upstreams/hello/*.conf")
    assert entries.count("server ") == 3 and " down;" not in entries, entries


def assert_no_failures(load):
    assert load["requests"] > 100, load
    assert load["failed"] == 0, load


def test_load_balancer_spreads_requests_over_every_app_server(host):
    load, rc, err = under_load(host, "true", vhost=VHOST, duration=3, lead=0, concurrency=2)
    assert rc == 0, err
    assert_no_failures(load)
    assert set(load["hosts"]) == set(APPS), load


def test_app_servers_answer_only_the_load_balancer_and_believe_only_it(host, apps):
    # Through the load balancer, a forged client address is replaced.
    through = http_get(host, "/request", vhost=VHOST, headers={"X-Forwarded-For": "6.6.6.6"})
    assert through["status"] == 200 and through["json"]["client"] == "127.0.0.1", through
    # The load balancer itself is trusted: what it forwards is believed.
    direct = http_get(host, "/request", vhost=VHOST, address="asgi-app2", port=8000,
                      headers={"X-Forwarded-For": "7.7.7.7"})
    assert direct["status"] == 200 and direct["json"]["client"] == "7.7.7.7", direct
    # Another app server is not, whatever it claims.
    other = http_get(apps["asgi-app1"], "/request", vhost=VHOST, address="asgi-app2", port=8000,
                     headers={"X-Forwarded-For": "10.0.0.1"})
    assert other["status"] == 403, other


def test_a_dead_app_server_costs_no_request(host, apps):
    """Connection errors move a GET to the next server (passive health
    checks then rest the dead one): nginx stopped on one app server under
    load loses nothing."""
    victim = apps["asgi-app3"]

    def outage():
        victim.check_output("systemctl stop nginx")
        time.sleep(4)
        victim.check_output("systemctl start nginx")
        time.sleep(2)

    load, _ = load_while(host, outage, vhost=VHOST)
    assert_no_failures(load)
    assert set(load["hosts"]) == set(APPS), load
    config = host.check_output("nginx -T 2>/dev/null")
    assert "proxy_next_upstream error timeout http_502 http_504;" in config
    assert "non_idempotent" not in config


def greetings(apps):
    """HELLO_GREETING in the environment of each app server's gunicorn."""
    return {
        name: app.check_output(f"tr '\\0' '\\n' < /proc/{main_pid(app, 'hello.service')}/environ | sed -n 's/^HELLO_GREETING=//p'")
        for name, app in apps.items()
    }


@pytest.mark.parametrize(("greeting", "serial"), [("Hello from the rolled cluster", 1), ("Hello from the cluster", 2)])
def test_a_settings_change_rolls_through_the_load_balancer(host, apps, greeting, serial):
    """site.yml with changed settings on the running fleet (its release
    unchanged): every app server restarts with them, drained a batch of
    deploy_serial at a time, and the load through the load balancer loses
    nothing; then back to the inventory's settings, two hosts at a time."""
    before = masters(apps)
    logged = {name: log_lines(app) for name, app in apps.items()}
    settings = {"app_env": {"HELLO_GREETING": greeting}, "deploy_serial": serial}
    load, run = load_while(host, lambda: converge("-e", json.dumps(settings)), vhost=VHOST)
    assert_ran(run)
    assert_no_failures(load)
    batches = -(-len(APPS) // serial)
    assert run.stdout.count("PLAY [Roll the changes through the load balancers, one batch at a time]") == batches
    after = masters(apps)
    assert all(after[name] != before[name] for name in APPS), (before, after)
    assert greetings(apps) == dict.fromkeys(APPS, greeting)
    for name, app in apps.items():
        assert last_log_entry(app)["outcome"] == "restarted"
        # One line more per host: the log is appended to, never rewritten,
        # and only root and the adm group read it.
        assert log_lines(app) == logged[name] + 1
        log_dir = app.file(DEPLOY_LOG.rsplit("/", 1)[0])
        assert (log_dir.user, log_dir.group, log_dir.mode) == ("root", "adm", 0o750)
        log = app.file(DEPLOY_LOG)
        assert (log.user, log.group, log.mode) == ("root", "adm", 0o640)
    assert not apps["asgi-app1"].file(LOCK).exists
    assert_all_in_service(host)


def prestart_runs(apps):
    """Lines the prestart hook wrote, on all hosts together."""
    return sum(len(app.check_output("cat /var/lib/hello/prestart.log").split()) for app in apps.values())


def test_deploy_under_load_switches_every_host_and_locks_out_a_second_one(host, apps, releases):
    before = lives(apps)
    hooks = prestart_runs(apps)
    # The hosts that do not build cannot reach the package index at all:
    # they unpack the venv the build host installed.
    for name in APPS[1:]:
        apps[name].check_output("cp /etc/hosts /etc/hosts.test && echo '127.0.0.9 pypi.org files.pythonhosted.org' >> /etc/hosts")
    args = ["-e", f"app_source_dir={releases['2.0.0']}"]

    def two_deploys():
        first = start_playbook(DEPLOY, *args)
        try:
            deadline = time.monotonic() + 180
            while not apps["asgi-app1"].file(f"{LOCK}/owner").exists:
                assert first.poll() is None and time.monotonic() < deadline, "the first deploy never took the lock"
                time.sleep(0.5)
            second = playbook(DEPLOY, *args)
            out, _ = first.communicate(timeout=900)
        finally:
            if first.poll() is None:
                first.kill()
        return first.returncode, out, second

    try:
        load, (rc, out, second) = load_while(host, two_deploys, vhost=VHOST)
    finally:
        for name in APPS[1:]:
            # /etc/hosts is a bind mount in the container: rewrite it in place.
            apps[name].check_output("cat /etc/hosts.test > /etc/hosts && rm /etc/hosts.test")

    assert rc == 0, out[-5000:]
    # The second deploy failed at the lock, before any change, naming the holder.
    assert second.returncode != 0
    assert "hello is locked: another deploy" in second.stdout + second.stderr, second.stderr[-3000:]
    assert recap(second.stdout).get("changed", 0) == 0, second.stdout[-3000:]

    assert_no_failures(load)
    after = lives(apps)
    assert len(set(after.values())) == 1, after
    release = after["asgi-app1"]
    assert release != before["asgi-app1"]
    # Both releases answered during the deploy: the switch is seen.
    assert set(load["versions"]) == {VERSION_1, "2.0.0"}, load
    assert {before["asgi-app1"], release} <= set(load["releases"]), load
    for name, app in apps.items():
        entry = last_log_entry(app)
        assert entry["release"] == release and entry["outcome"] == "switched", entry
        assert entry["from"] == before[name] and entry["by"] and entry["action"] == "deploy", entry
        assert "installed=bundle" in app.file(f"/srv/hello/releases/{release}/.release").content_string
        assert previous(app) == before[name]
    # The prestart hook ran once for the deploy, on one host.
    assert prestart_runs(apps) == hooks + 1
    assert not apps["asgi-app1"].file(LOCK).exists
    assert_all_in_service(host)


def test_rolling_restart_under_load_restarts_every_host(host, apps):
    before = masters(apps)
    load, run = load_while(host, lambda: playbook(ROLLING_RESTART), vhost=VHOST)
    assert_ran(run)
    assert_no_failures(load)
    after = masters(apps)
    assert all(after[name] != before[name] for name in APPS), (before, after)
    for app in apps.values():
        assert last_log_entry(app)["outcome"] == "restarted"
    assert_all_in_service(host)


def test_a_stale_lock_stops_a_run_until_it_is_broken(apps):
    """A lock left by an interrupted run stops the next run before any
    change, naming its holder; with app_break_lock the run removes it,
    goes on and releases its own lock."""
    app = apps["asgi-app1"]
    note = {"id": "20260101T000000Z-stale1", "by": "ops@old-laptop", "action": "deploy", "since": "2026-01-01T00:00:00Z"}
    app.check_output(f"mkdir -p {LOCK} && printf '%s' {shlex.quote(json.dumps(note))} > {LOCK}/owner")
    before = main_pid(app, "hello.service")
    locked = playbook(ROLLING_RESTART, "--limit", "asgi-app1")
    said = locked.stdout + locked.stderr
    assert locked.returncode != 0
    for part in ("hello is locked: another deploy", "20260101T000000Z-stale1", "ops@old-laptop", "app_break_lock=true"):
        assert part in said, said[-3000:]
    assert recap(locked.stdout).get("changed", 0) == 0, locked.stdout[-3000:]
    assert main_pid(app, "hello.service") == before
    broken = playbook(ROLLING_RESTART, "--limit", "asgi-app1", "-e", "app_break_lock=true")
    assert broken.returncode == 0, broken.stdout[-3000:]
    assert main_pid(app, "hello.service") != before
    assert last_log_entry(app)["outcome"] == "restarted"
    assert not app.file(LOCK).exists


def test_rollback_under_load_goes_back_to_the_previous_release(host, apps):
    before = lives(apps)
    targets = {name: previous(app) for name, app in apps.items()}
    # Two hosts per batch: two batches for three hosts.
    load, run = load_while(host, lambda: playbook(ROLLBACK, "-e", "deploy_serial=2"), vhost=VHOST)
    assert_ran(run)
    assert run.stdout.count("PLAY [Roll back the hosts, one batch at a time]") == 2, run.stdout[-3000:]
    assert_no_failures(load)
    assert lives(apps) == targets
    assert set(load["versions"]) == {VERSION_1, "2.0.0"}, load
    for name, app in apps.items():
        assert previous(app) == before[name]
        assert last_log_entry(app)["outcome"] == "rolled-back"
    assert_all_in_service(host)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-e", "rollback_to=no-such-release"], "has no complete release no-such-release"),
        (["-e", "rollback_to=../etc"], "rollback_to must be a release id"),
        (["-e", "deploy_serial=0"], "deploy_serial must be a host count"),
        (["-e", "deploy_wheelhouse=maybe"], "deploy_wheelhouse must be true or false"),
    ],
)
def test_bad_rollback_input_changes_nothing(host, apps, args, message):
    before = (lives(apps), masters(apps))
    run = playbook(ROLLBACK, *args)
    assert run.returncode != 0
    assert message in run.stdout + run.stderr, run.stdout[-3000:] + run.stderr[-3000:]
    assert recap(run.stdout).get("changed", 0) == 0, run.stdout[-3000:]
    assert (lives(apps), masters(apps)) == before
    assert not apps["asgi-app1"].file(LOCK).exists


def test_broken_release_is_rejected_and_the_first_host_goes_back(host, apps, releases):
    before_live, before_masters = lives(apps), masters(apps)
    # Installed from the package index on each host this time (no bundle).
    args = ["-e", f"app_source_dir={releases['3.0.0']}", "-e", "app_health_timeout=10", "-e", "deploy_wheelhouse=false"]
    load, run = load_while(host, lambda: playbook(DEPLOY, *args), vhost=VHOST)
    assert run.returncode != 0
    output = " ".join((run.stdout + run.stderr).split())
    assert "did not answer /health with 200" in output, output[-5000:]
    assert "failed on asgi-app1" in output and f"back on release {before_live['asgi-app1']}" in output, output[-5000:]
    # Zero failed requests, and no answer ever came from the broken release.
    assert_no_failures(load)
    assert "3.0.0" not in load["versions"], load
    # The first host is back on its release; the others were not touched.
    assert lives(apps) == before_live
    after_masters = masters(apps)
    assert after_masters["asgi-app1"] != before_masters["asgi-app1"]
    assert {n: after_masters[n] for n in APPS[1:]} == {n: before_masters[n] for n in APPS[1:]}
    entry = last_log_entry(apps["asgi-app1"])
    assert entry["outcome"] == "failed, restored" and "did not answer" in entry["message"], entry
    # Every host staged the rejected release from the index; only the first
    # one ever ran it.
    for app in apps.values():
        assert "installed=index" in app.file(f"/srv/hello/releases/{entry['release']}/.release").content_string
    assert not apps["asgi-app1"].file(LOCK).exists
    assert_all_in_service(host)
    after, _, _ = under_load(host, "true", vhost=VHOST, duration=3, lead=0, concurrency=2)
    assert after["failed"] == 0 and set(after["hosts"]) == set(APPS), after


def test_release_crashing_on_start_fails_the_deploy_and_the_previous_keeps_serving(host, apps, releases):
    before_live, before_masters = lives(apps), masters(apps)
    # From the index as well: the bundle's path is the first deploy's.
    args = ["-e", f"app_source_dir={releases['4.0.0']}", "-e", "app_health_timeout=10", "-e", "deploy_wheelhouse=false"]
    load, run = load_while(host, lambda: playbook(DEPLOY, *args), vhost=VHOST)
    assert run.returncode != 0
    output = " ".join((run.stdout + run.stderr).split())
    assert "failed on asgi-app1" in output and f"back on release {before_live['asgi-app1']}" in output, output[-5000:]
    # The crash is on record in the first host's journal.
    crash = apps["asgi-app1"].run("journalctl -u hello.service --no-pager | grep -c 'release 4.0.0 cannot start'")
    assert int(crash.stdout.strip() or 0) >= 1, crash
    assert_no_failures(load)
    assert "4.0.0" not in load["versions"], load
    assert lives(apps) == before_live
    after_masters = masters(apps)
    assert {n: after_masters[n] for n in APPS[1:]} == {n: before_masters[n] for n in APPS[1:]}
    assert last_log_entry(apps["asgi-app1"])["outcome"] == "failed, restored"
    assert not apps["asgi-app1"].file(LOCK).exists
    assert_all_in_service(host)
    after, _, _ = under_load(host, "true", vhost=VHOST, duration=3, lead=0, concurrency=2)
    assert after["failed"] == 0 and set(after["hosts"]) == set(APPS), after


def test_a_drained_server_stays_out_even_through_site_yml_until_put_back(host):
    assert_ran(playbook(DRAIN, "--limit", "asgi-app3"))
    drained, _, _ = under_load(host, "true", vhost=VHOST, duration=3, lead=0, concurrency=2)
    # site.yml keeps a drained server drained (and changes nothing else).
    assert_check_mode_changes_nothing()
    back = assert_ran(playbook(DRAIN, "--limit", "asgi-app3", "-e", "nginx_drain=false"))
    restored, _, _ = under_load(host, "true", vhost=VHOST, duration=3, lead=0, concurrency=2)
    assert drained["failed"] == 0 and set(drained["hosts"]) == set(APPS[:2]), drained
    assert back.get("changed", 0) >= 1
    assert restored["failed"] == 0 and set(restored["hosts"]) == set(APPS), restored


def test_load_balancer_on_an_unsupported_platform_is_refused_before_any_change(host, apps):
    """Only the load balancer claims to be Ubuntu: site.yml stops in its
    checks, naming it, before any host (app servers included) changes."""
    site = "sha256sum /etc/nginx/nginx.conf /etc/nginx/sites-available/hello.conf"
    before = (lives(apps), masters(apps), host.check_output(site), main_pid(host, "nginx.service"))
    with posing_as(host, "Ubuntu 24.04"):
        run = converge(fresh_facts=True)
    assert_platform_refused(run, "Ubuntu 24.04", "asgi-lb")
    assert (lives(apps), masters(apps), host.check_output(site), main_pid(host, "nginx.service")) == before
    assert http_get(host, "/", vhost=VHOST)["status"] == 200


def test_a_drain_nginx_refuses_changes_nothing_and_says_why(host):
    """A load balancer whose configuration nginx -t refuses (a broken file
    left there by hand): draining fails naming it and nginx's reason, the
    server's entry is as it was, and every app server keeps its traffic."""
    entry = "sha256sum /etc/nginx/asgi-upstreams/hello/asgi-app3.conf"
    before = host.check_output(entry)
    master = main_pid(host, "nginx.service")
    host.check_output("echo 'no_such_directive on;' > /etc/nginx/conf.d/zz-by-hand.conf")
    try:
        run = playbook(DRAIN, "--limit", "asgi-app3")
    finally:
        host.check_output("rm -f /etc/nginx/conf.d/zz-by-hand.conf")
    output = run.stdout + run.stderr
    assert run.returncode != 0, output[-3000:]
    assert "Could not drain asgi-app3 on asgi-lb" in output and 'unknown directive "no_such_directive"' in output, output[-3000:]
    assert host.check_output(entry) == before
    assert host.check_output("find /etc/nginx -name '.*.asgi-*'") == ""
    assert main_pid(host, "nginx.service") == master
    load, _, _ = under_load(host, "true", vhost=VHOST, duration=3, lead=0, concurrency=2)
    assert load["failed"] == 0 and set(load["hosts"]) == set(APPS), load
