"""The repository as a collection, installed beside a team's own Ansible code.

The collection is built from this checkout (`ansible-galaxy collection
build`), installed with `--offline` into an empty directory of a copy of
molecule/multi-app/consumer (a team's project: its own playbook using the
roles by their full names, its own roles named `nginx` and `app`, its app
servers in the group `web`, another role's `supervisor_programs` in its
group_vars), and that project provisions a host of its own from the warm
image. Then the collection's own playbooks run by their full names
against the same inventory: site.yml changes nothing, deploy.yml ships a
new release, its bundle in the controller user's cache, never inside the
installed collection.
"""

import json
import os
import shutil
import subprocess
import tarfile
from pathlib import Path

import pytest
from testlib import PROJECT, SSH_CONFIG, boot, http_get, podman, recap, ssh_host

NAME = "asgi-consumer"
IMAGE = f"localhost/asgi-provisioner-{os.environ.get('MOLECULE_DISTRO', 'debian12')}-warm:latest"
CONSUMER = Path(__file__).resolve().parent.parent / "consumer"
# What the artifact leaves out: the tests, benchmarks, examples, demo
# inventories and every cache.
NOT_SHIPPED = ("molecule/", "bench/", "examples/", "inventories/", ".cache/", ".venv/", "Makefile", "ansible.cfg")


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """The team's project with the collection installed in it, and its host."""
    root = tmp_path_factory.mktemp("consumer")
    build = subprocess.run(
        ["ansible-galaxy", "collection", "build", str(PROJECT), "--output-path", str(root / "dist")],
        capture_output=True, text=True, check=False,
    )
    assert build.returncode == 0, build.stdout + build.stderr
    (artifact,) = (root / "dist").glob("asgi-provisioner-*.tar.gz")
    work = root / "project"
    shutil.copytree(CONSUMER, work)
    install = subprocess.run(
        ["ansible-galaxy", "collection", "install", "--offline", "-p", str(work / "collections"), str(artifact)],
        cwd=work, capture_output=True, text=True, check=False, env=team_env(root, work),
    )
    assert install.returncode == 0, install.stdout + install.stderr
    (work / "hosts.yml").write_text(json.dumps({"all": {
        "vars": {"ansible_connection": "ssh", "ansible_ssh_common_args": f"-F {SSH_CONFIG}",
                 "ansible_python_interpreter": "/usr/bin/python3",
                 # Root over SSH already (a real fleet connects as a deploy user).
                 "ansible_become": False},
        "children": {"web": {"hosts": {NAME: {}}}},
    }}))
    assert boot(NAME, IMAGE) in ("running", "degraded")
    yield {"root": root, "work": work, "artifact": artifact,
           "collection": work / "collections" / "ansible_collections" / "asgi" / "provisioner"}
    podman("rm", "-f", "-t", "2", NAME)


def team_env(root, work):
    """The team's environment: none of molecule's or this checkout's Ansible
    settings (their ansible.cfg applies), and a cache directory of their own."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_"))}
    env.update({"ANSIBLE_CONFIG": str(work / "ansible.cfg"), "ANSIBLE_NOCOLOR": "1",
                "ANSIBLE_SSH_CONTROL_PATH_DIR": str(root / "cp"), "XDG_CACHE_HOME": str(root / "cache")})
    return env


def team_run(project, *args):
    return subprocess.run(
        ["ansible-playbook", *args], cwd=project["work"], env=team_env(project["root"], project["work"]),
        capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
    )


def tree(path):
    """Every file under path with its size and modification time (but the
    bytecode Python caches beside the plugins when Ansible loads them)."""
    return sorted(
        (str(p.relative_to(path)), p.stat().st_size, p.stat().st_mtime_ns)
        for p in path.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts
    )


@pytest.fixture(scope="module")
def provisioned(project):
    """The team's own playbook, run once; the installed collection's files
    before it."""
    before = tree(project["collection"])
    run = team_run(project, "site.yml")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    return {"run": run, "collection_before": before}


def test_the_artifact_holds_the_roles_and_playbooks_and_nothing_of_the_tests(project):
    with tarfile.open(project["artifact"]) as artifact:
        names = artifact.getnames()
    for role in ("python", "app", "gunicorn", "supervisor", "circus", "nginx", "certbot"):
        assert f"roles/{role}/meta/argument_specs.yml" in names, role
    for playbook in ("site", "deploy", "rolling_restart", "rollback", "drain"):
        assert f"playbooks/{playbook}.yml" in names, playbook
    assert "meta/runtime.yml" in names and "CHANGELOG.md" in names
    assert not [n for n in names if n.startswith(NOT_SHIPPED) or "/__pycache__/" in n], names


def test_the_team_project_serves_its_app_with_the_collection_roles_and_its_own(project, provisioned):
    host = ssh_host(NAME)
    answer = http_get(host, "/", vhost="ledger.test")
    assert answer["status"] == 200, answer
    assert answer["json"] == {"app": "ledger", "greeting": "Hello from the team's own project"}
    # Served by the collection's gunicorn role: socket activation under systemd.
    assert host.service("ledger.socket").is_running
    assert host.service("ledger.service").is_running
    # The team's own `nginx` and `app` roles ran too (neither was shadowed).
    status = http_get(host, "/team-status", vhost="localhost", port=8081)
    assert status["status"] == 200 and status["body"] == f"team nginx role on {NAME}\n", status
    assert json.loads(host.check_output("cat /etc/ledger-ops.json")) == {"app": "ledger", "owner": "team-ledger"}
    assert "asgi.provisioner.nginx : " in provisioned["run"].stdout
    assert "nginx : Write the team's status server" in provisioned["run"].stdout


def test_the_collection_site_playbook_by_its_full_name_changes_nothing(project, provisioned):
    """asgi.provisioner.site with the team's group name: its checks let the
    other role's supervisor_programs through, and the host is converged."""
    run = team_run(project, "asgi.provisioner.site", "-e", "app_servers_group=web")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    totals = recap(run.stdout)
    assert totals.get("changed", 0) == 0 and totals.get("ok", 0) > 0, run.stdout[-6000:]


def test_a_deploy_by_full_name_keeps_its_bundle_outside_the_collection(project, provisioned):
    host = ssh_host(NAME)
    source = project["root"] / "ledger-2"
    shutil.copytree(CONSUMER / "ledger", source)
    (source / "VERSION").write_text("2.0.0\n")
    before = host.check_output("readlink -f /srv/ledger/current")
    run = team_run(project, "asgi.provisioner.deploy", "-e", "app_servers_group=web", "-e", f"app_source_dir={source}")
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-3000:]
    after = host.check_output("readlink -f /srv/ledger/current")
    assert after != before
    assert "installed=bundle" in host.check_output(f"cat {after}/.release")
    assert http_get(host, "/", vhost="ledger.test")["status"] == 200
    # The bundle is in the team's cache directory; the installed collection
    # is exactly as installed (no bundle, no cache, no file changed).
    assert list((project["root"] / "cache" / "asgi-provisioner" / "bundles").glob("ledger-*.venv.tar.zst"))
    assert tree(project["collection"]) == provisioned["collection_before"]
