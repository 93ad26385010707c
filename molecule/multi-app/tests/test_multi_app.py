"""molecule/multi-app: two apps on one host, checked on the running host.

`shop` and `blog` are two inventory names for the container asgi-multi;
site.yml gives each its own user, release tree, venv, units, socket, env
file and nginx site. Restarting, deploying or removing one must not
disturb the other. The removal runs last.
"""

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
from packaging.markers import Marker
from packaging.utils import canonicalize_name
from testlib import (
    PROJECT,
    assert_check_mode_changes_nothing,
    assert_ran,
    assert_refused_before_any_change,
    child_pids,
    converge,
    http_get,
    load_while,
    main_pid,
    playbook,
    recap,
)

APPS = {"shop": "Hello from the shop", "blog": "Hello from the blog"}
ROLLING_RESTART = PROJECT / "playbooks" / "rolling_restart.yml"
DEPLOY = PROJECT / "playbooks" / "deploy.yml"
STOREFRONT = PROJECT / "examples" / "storefront"
JOURNAL = PROJECT / "examples" / "journal"
PYLOCK = Path(__file__).resolve().parent.parent / "files" / "storefront-pylock.toml"


def vhost(app):
    return f"{app}.test"


def processes(host, app):
    """The app's master and workers: (master pid, [worker pids])."""
    master = main_pid(host, f"{app}.service")
    return master, child_pids(host, master)


def state(host, app):
    """What another app's run could disturb: its processes, live release,
    env file and site."""
    return {
        "processes": processes(host, app),
        "release": host.check_output(f"readlink /srv/{app}/current"),
        "files": host.check_output(
            f"sha256sum /etc/{app}/app.env /etc/nginx/sites-available/{app}.conf /etc/systemd/system/{app}.service"
        ),
    }


def assert_load_clean(load):
    assert load["stopped"] == "stop-file", load  # the load outlasted the action
    assert load["requests"] > 100, load
    assert load["failed"] == 0, load


@pytest.mark.parametrize("app", sorted(APPS))
def test_each_app_answers_through_nginx_on_its_own_name(host, app):
    answer = http_get(host, "/", vhost=vhost(app))
    assert answer["status"] == 200, answer
    assert answer["json"]["message"] == APPS[app]
    # Answered by this app's workers, running as this app's user.
    _, workers = processes(host, app)
    assert answer["json"]["pid"] in workers
    assert host.process.get(pid=answer["json"]["pid"]).user == app
    assert answer["json"]["release"] == host.check_output(f"basename $(readlink /srv/{app}/current)")


@pytest.mark.parametrize("app", sorted(APPS))
def test_each_app_has_its_own_user_units_socket_env_file_and_site(host, app):
    other = next(name for name in APPS if name != app)
    for unit in (f"{app}.socket", f"{app}.service"):
        assert host.service(unit).is_running, unit
    # Every process of the app's user runs in the app's own service.
    units = set(host.check_output(f"ps -o unit= -u {app}").split())
    assert units == {f"{app}.service"}, host.check_output(f"ps -o pid,unit,args -u {app}")
    sock = host.file(f"/run/{app}/systemd.sock")
    assert sock.is_socket
    env = host.file(f"/etc/{app}/app.env")
    assert (env.user, env.group, env.mode) == ("root", app, 0o640)
    assert APPS[app] in host.check_output(f"cat /etc/{app}/app.env")
    # Neither app can read the other's settings or enter its socket directory.
    assert host.run(f"runuser -u {other} -- cat /etc/{app}/app.env").rc != 0
    assert host.run(f"runuser -u {other} -- ls /run/{app}").rc != 0
    # Each app runs from its own release tree's venv.
    master, _ = processes(host, app)
    interpreter = host.process.get(pid=master).args.split()[0]
    assert interpreter.startswith(f"/srv/{app}/releases/") and interpreter.endswith("/venv/bin/python"), interpreter
    site = host.file(f"/etc/nginx/sites-available/{app}.conf").content_string
    assert f"server_name {vhost(app)};" in site and f"unix:/run/{app}/systemd.sock" in site


def test_restart_of_one_app_under_load_fails_nothing_on_the_other(host):
    before_shop, before_blog = processes(host, "shop"), state(host, "blog")
    load, run = load_while(host, lambda: playbook(ROLLING_RESTART, "--limit", "shop"), vhost=vhost("blog"))
    assert_ran(run)
    assert_load_clean(load)
    # shop got new workers; blog kept every process, release and file.
    after_shop = processes(host, "shop")
    assert not set(after_shop[1]) & set(before_shop[1]), (before_shop, after_shop)
    assert state(host, "blog") == before_blog
    assert http_get(host, "/", vhost=vhost("shop"))["status"] == 200


@pytest.fixture(scope="module")
def new_release(tmp_path_factory):
    """The shop's app as release 2.0.0."""
    target = tmp_path_factory.mktemp("releases") / "2.0.0"
    shutil.copytree(STOREFRONT, target, ignore=shutil.ignore_patterns("__pycache__"))
    (target / "VERSION").write_text("2.0.0\n")
    return target


def test_a_requirement_whose_hash_does_not_match_is_never_installed(host, tmp_path):
    """The shop's requirements pin every file by hash: one changed hash and
    the build stops, naming the package, before anything is switched."""
    tree = tmp_path / "storefront"
    shutil.copytree(STOREFRONT, tree)
    requirements = tree / "requirements.txt"
    text = requirements.read_text()
    # Every hash given for starlette (one of them matching would do).
    entry = re.search(r"^starlette==\S+(?: \\\n\s+--hash=sha256:[0-9a-f]{64})+", text, re.MULTILINE)
    assert entry, text
    requirements.write_text(text.replace(entry.group(0), re.sub(r"[0-9a-f]{64}", "0" * 64, entry.group(0))))
    before = host.check_output("readlink /srv/shop/current")
    run = converge("--limit", "shop", "-e", f"app_source_dir={tree}")
    output = " ".join((run.stdout + run.stderr).split())
    assert run.returncode != 0
    assert re.search(r"(?i)hash", output) and "starlette" in output, output[-3000:]
    assert "Nothing was switched" in output
    assert host.check_output("readlink /srv/shop/current") == before
    assert http_get(host, "/", vhost=vhost("shop"))["json"]["message"] == APPS["shop"]


def test_apps_of_one_machine_that_disagree_on_its_settings_are_refused(host, tmp_path):
    """The shop alone sets a package index: pip.conf and uv.toml are the
    machine's, so even a run limited to the shop stops in the checks,
    naming both apps and the setting, before any change."""
    extra = tmp_path / "disagree.yml"
    extra.write_text(json.dumps({"all": {"hosts": {"shop": {"python_index_url": "https://pypi.internal.example/simple/"}}}}))
    before = host.check_output("sha256sum /etc/pip.conf /etc/nginx/nginx.conf")
    run = converge("-i", str(extra), "--limit", "shop")
    assert_refused_before_any_change(run, r"shop, blog are one machine \(asgi-multi\) but set python_index_url differently")
    assert host.check_output("sha256sum /etc/pip.conf /etc/nginx/nginx.conf") == before


def test_the_apps_own_pin_of_the_server_stack_wins(host, tmp_path):
    """The shop's plain pinned requirements pin uvicorn too: that version
    is installed (not app_server_packages'), and the build says so."""
    tree = tmp_path / "storefront"
    shutil.copytree(STOREFRONT, tree)
    (tree / "requirements.txt").write_text("starlette==1.10.0\nuvicorn==0.50.0\n")
    run = converge("--limit", "shop", "-e", f"app_source_dir={tree}")
    assert_ran(run)
    said = " ".join(run.stdout.split())
    assert "uvicorn==0.50.0 pinned by the app wins over uvicorn[standard]==0.54.0" in said, run.stdout[-3000:]
    version = host.check_output("/srv/shop/current/venv/bin/python -c 'import uvicorn; print(uvicorn.__version__)'")
    assert version == "0.50.0"
    assert http_get(host, "/", vhost=vhost("shop"))["json"]["message"] == APPS["shop"]


def installed(host, app):
    listing = host.check_output(
        f"/srv/{app}/current/venv/bin/python -c 'import importlib.metadata as m, json; "
        "print(json.dumps({d.metadata[\"Name\"]: d.version for d in m.distributions()}))'"
    )
    return {canonicalize_name(name): version for name, version in json.loads(listing).items()}


def test_a_pylock_toml_is_installed_by_uv_and_shipped_in_the_bundle(host, tmp_path):
    """A team that locks with PEP 751: the pylock.toml wins over the
    requirements file beside it (anyio 4.12.0 there, 4.16.0 in
    requirements.txt); uv installs what it lists (site.yml), and
    deploy.yml's bundle carries the same set, installed once."""
    tree = tmp_path / "storefront"
    shutil.copytree(STOREFRONT, tree)
    shutil.copy(PYLOCK, tree / "pylock.toml")
    python = host.check_output("/usr/bin/python3 -c 'import platform; print(platform.python_version())'")
    environment = {"python_full_version": python, "python_version": ".".join(python.split(".")[:2])}
    locked = {
        canonicalize_name(package["name"]): package["version"]
        for package in tomllib.loads(PYLOCK.read_text())["packages"]
        if Marker(package.get("marker", "python_version > '0'")).evaluate(environment)
    }
    assert locked["anyio"] == "4.12.0"

    run = converge("--limit", "shop", "-e", f"app_source_dir={tree}")
    assert_ran(run)
    assert "dependencies: pylock; pylock.toml: 4 locked packages" in " ".join(run.stdout.split()), run.stdout[-3000:]
    have = installed(host, "shop")
    assert {name: have.get(name) for name in locked} == locked
    assert http_get(host, "/", vhost=vhost("shop"))["json"]["message"] == APPS["shop"]

    (tree / "VERSION").write_text("2.1.0\n")
    assert_ran(playbook(DEPLOY, "--limit", "shop", "-e", f"app_source_dir={tree}"))
    assert "installed=bundle" in host.check_output("cat /srv/shop/current/.release")
    have = installed(host, "shop")
    assert {name: have.get(name) for name in locked} == locked
    assert http_get(host, "/health", vhost=vhost("shop"))["json"]["version"] == "2.1.0"


def test_deploy_of_one_app_under_load_leaves_the_other_alone(host, new_release):
    before_blog = state(host, "blog")
    shop_release = host.check_output("readlink /srv/shop/current")
    args = ["--limit", "shop", "-e", f"app_source_dir={new_release}"]
    load, run = load_while(host, lambda: playbook(DEPLOY, *args), vhost=vhost("blog"))
    assert_ran(run)
    assert_load_clean(load)
    assert host.check_output("readlink /srv/shop/current") != shop_release
    assert http_get(host, "/health", vhost=vhost("shop"))["json"]["version"] == "2.0.0"
    assert state(host, "blog") == before_blog
    assert http_get(host, "/health", vhost=vhost("blog"))["json"]["version"] != "2.0.0"


def test_an_app_writing_to_its_working_directory_runs_in_its_state_directory(host):
    """The shop opens ./storefront.db, as tutorials do: with
    app_working_directory: state it lands in /var/lib/shop, and the code
    stays read-only."""
    answer = http_get(host, "/", vhost=vhost("shop"))
    assert answer["json"]["database"] == "/var/lib/shop/storefront.db", answer
    assert answer["json"]["starts"] >= 1
    database = host.file("/var/lib/shop/storefront.db")
    assert (database.user, database.group) == ("shop", "shop")
    release = host.check_output("readlink -e /srv/shop/current")
    assert not host.file(f"{release}/app/storefront.db").exists
    assert host.run(f"runuser -u shop -- touch {release}/app/x").rc != 0


def test_the_django_blog_is_migrated_built_and_its_static_files_served_by_nginx(host):
    answer = http_get(host, "/", vhost=vhost("blog"))
    assert answer["json"]["posts"] == 0, answer  # the table exists: migrate ran as the prestart hook
    css = http_get(host, "/static/journal/site.css", vhost=vhost("blog"))
    assert css["status"] == 200 and "font-family" in css["body"], css
    # nginx answered it (its expiry header), not Django.
    assert "max-age" in css["headers"].get("cache-control", ""), css
    assert http_get(host, "/static/built-by.txt", vhost=vhost("blog"))["body"].strip() == "blog"
    release = host.check_output("readlink -e /srv/blog/current")
    built = host.file(f"{release}/app/staticfiles/journal/site.css")
    assert (built.user, built.group, built.mode) == ("root", "root", 0o644)
    assert host.run(f"runuser -u blog -- touch {release}/app/staticfiles/x").rc != 0


def test_a_build_step_that_fails_stops_the_release_before_it_goes_live(host):
    before = host.check_output("readlink /srv/blog/current")
    releases = host.check_output("ls /srv/blog/releases")
    run = converge("--limit", "blog", "-e", "app_build_command='python manage.py collectstatic --no-such-option'")
    output = " ".join((run.stdout + run.stderr).split())
    assert run.returncode != 0
    assert "Run the build step as the app user" in output and "no-such-option" in output, output[-3000:]
    assert "Nothing was switched" in output
    assert host.check_output("readlink /srv/blog/current") == before
    assert host.check_output("ls /srv/blog/releases") == releases
    assert http_get(host, "/", vhost=vhost("blog"))["json"]["message"] == APPS["blog"]


def test_the_bundle_ships_the_build_output_to_every_host(host, tmp_path):
    """deploy.yml with the bundle: collectstatic ran once on the build
    host and its output is in the bundle the hosts unpack."""
    tree = tmp_path / "journal"
    shutil.copytree(JOURNAL, tree)
    (tree / "VERSION").write_text("1.1.0\n")
    assert_ran(playbook(DEPLOY, "--limit", "blog", "-e", f"app_source_dir={tree}"))
    release = host.check_output("readlink -e /srv/blog/current")
    assert "installed=bundle" in host.check_output(f"cat {release}/.release")
    # A zstd archive: listed by GNU tar with the zstd program (make test
    # installs it), as the hosts unpack it.
    bundle = PROJECT / ".cache" / "bundles" / f"blog-{Path(release).name}.venv.tar.zst"
    names = [name.removeprefix("./") for name in subprocess.run(
        ["tar", "-t", "-f", str(bundle)], check=True, capture_output=True, text=True).stdout.splitlines()]
    assert "app/staticfiles/journal/site.css" in names and "app/staticfiles/built-by.txt" in names
    assert "venv/pyvenv.cfg" in names and not any(name.startswith("wheels/") for name in names)
    assert http_get(host, "/health", vhost=vhost("blog"))["json"]["version"] == "1.1.0"
    assert http_get(host, "/static/journal/site.css", vhost=vhost("blog"))["status"] == 200


def test_removing_one_app_under_load_leaves_the_other_serving(host):
    before_blog = state(host, "blog")
    shop_uid = host.user("shop").uid
    load, run = load_while(host, lambda: converge("--limit", "shop", "-e", "app_state=absent"), vhost=vhost("blog"))
    assert_ran(run)
    assert_load_clean(load)
    # shop's units, socket, site, code and configuration are gone ...
    for unit in ("shop.socket", "shop.service"):
        assert host.run(f"systemctl cat {unit}").rc != 0, unit
    assert host.run("pgrep -u shop").rc != 0, host.check_output("ps -o pid,args -u shop")
    for path in (
        "/run/shop",
        "/srv/shop",
        "/etc/shop",
        "/etc/tmpfiles.d/shop.conf",
        "/etc/nginx/sites-enabled/shop.conf",
        "/etc/nginx/sites-available/shop.conf",
    ):
        assert not host.file(path).exists, path
    # ... nginx no longer answers for its name (the catch-all closes the
    # connection) ...
    assert http_get(host, "/", vhost=vhost("shop"))["status"] is None
    # ... its data and its user stay (app_purge_state is false) ...
    assert host.file("/var/lib/shop").is_directory
    assert host.user("shop").uid == shop_uid
    # ... and blog was not touched.
    assert state(host, "blog") == before_blog
    assert http_get(host, "/", vhost=vhost("blog"))["json"]["message"] == APPS["blog"]


def test_removal_again_and_its_check_mode_change_nothing(host):
    run = converge("--limit", "shop", "-e", "app_state=absent")
    assert_ran(run)
    assert recap(run.stdout).get("changed") == 0, run.stdout[-5000:]
    assert_check_mode_changes_nothing("--limit", "shop", "-e", "app_state=absent")


def hosts_that_ran(output, title):
    """The inventory names a task ran for (ok, changed or failed; not
    skipped), from a playbook's output."""
    block = output.split(f"TASK [{title}]", 1)[1].split("TASK [", 1)[0]
    return set(re.findall(r"^(?:ok|changed|failed): \[([^\]]+)\]", block, re.MULTILINE))


def test_removed_app_comes_back_with_site_yml(host):
    """The host ends as it started, both apps serving, from one site.yml run
    over both names: the machine's shared parts (Python, uv) are the first
    name's alone, so the two never build them at the same moment."""
    run = converge()
    assert_ran(run)
    for app, message in APPS.items():
        assert http_get(host, "/", vhost=vhost(app))["json"]["message"] == message
    # One name of the machine (the inventory's first) installs Python and uv.
    assert len(hosts_that_ran(run.stdout, "python : Read the installed packages, the pip and uv settings and uv")) == 1, run.stdout[-5000:]
    assert hosts_that_ran(run.stdout, "app : Read the release's build, the links and the releases on disk") == {"shop", "blog"}, run.stdout[-5000:]


def test_purge_removes_the_data_user_and_deploy_log_too(host):
    """app_purge_state: the app's data, deploy log, user and group go as
    well; the other app is not touched."""
    before_blog = state(host, "blog")
    host.check_output("touch /var/lib/shop/uploaded-file && test -s /var/log/asgi-deploy/shop.log")
    run = converge("--limit", "shop", "-e", '{"app_state": "absent", "app_purge_state": true}')
    assert_ran(run)
    assert recap(run.stdout).get("changed", 0) > 0, run.stdout[-3000:]
    for path in ("/var/lib/shop", "/var/log/asgi-deploy/shop.log", "/srv/shop", "/etc/shop"):
        assert not host.file(path).exists, path
    assert not host.user("shop").exists
    assert not host.group("shop").exists
    assert host.user("blog").exists and host.file("/var/lib/blog").is_directory
    assert state(host, "blog") == before_blog
    assert http_get(host, "/", vhost=vhost("blog"))["json"]["message"] == APPS["blog"]
