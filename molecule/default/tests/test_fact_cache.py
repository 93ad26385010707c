"""Cached facts never describe another machine.

The project's ansible.cfg caches facts between runs (jsonfile, gathering =
smart). A host rebuilt on the other Debian under the same inventory name
must be provisioned from its own facts: site.yml reads the machine id and
boot time and gathers again when the cache was written for another
machine. Checked with the project's own ansible.cfg on a host this test
creates twice under one name, first on Debian 13, then on Debian 12: in
the scenario on Debian 12 (one direction shows it; the scenario on 13
skips it).
"""

import json
import os
import re
import subprocess

import pytest
from testlib import PROJECT, SSH_CONFIG, podman, ssh_host
from testlib import boot as boot_container

DISTRO = os.environ.get("MOLECULE_DISTRO", "debian12")
# Of its own per distro: the scenario may run on both distros at once.
NAME = f"asgi-rebuilt-{DISTRO}"
OTHER = {"debian12": "debian13", "debian13": "debian12"}[DISTRO]
INTERPRETER = {"debian12": "/usr/bin/python3.11", "debian13": "/usr/bin/python3.13"}
MAJOR = {"debian12": "12", "debian13": "13"}


def boot(distro):
    """A fresh container named NAME from `distro`'s image, booted."""
    return boot_container(NAME, f"localhost/asgi-provisioner-{distro}:latest")


@pytest.fixture(scope="module")
def workdir(tmp_path_factory):
    if DISTRO != "debian12":
        pytest.skip("shown once, by the scenario on Debian 12 (a Debian 13 host rebuilt on 12)")
    root = tmp_path_factory.mktemp("fact-cache")
    (root / "hosts.yml").write_text(json.dumps({"all": {
        "vars": {"ansible_connection": "ssh", "ansible_ssh_common_args": f"-F {SSH_CONFIG}",
                 "app_name": "hello", "app_source_dir": str(PROJECT / "examples" / "hello_app")},
        "children": {"app_servers": {"hosts": {NAME: {}}}},
    }}))
    yield root
    podman("rm", "-f", "-t", "2", NAME)


def cached_facts(directory):
    """The host's facts as the jsonfile cache holds them (ansible-core 2.19
    names the file s1_<host> and wraps the facts in a JSON string)."""
    (path,) = directory.glob(f"*{NAME}")
    data = json.loads(path.read_text())
    return json.loads(data["__payload__"]) if "__payload__" in data else data


def checks(workdir, run):
    """site.yml's check plays (`--tags always`) with the project's own
    ansible.cfg and a fact cache of this test's; each run its own SSH
    master, as separate operator sessions would have."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANSIBLE_", "MOLECULE_"))}
    env.update({
        "ANSIBLE_CONFIG": str(PROJECT / "ansible.cfg"),
        "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(workdir / "facts"),
        "ANSIBLE_SSH_CONTROL_PATH_DIR": str(workdir / f"cp{run}"),
        "ANSIBLE_NOCOLOR": "1",
    })
    result = subprocess.run(
        ["ansible-playbook", "-i", str(workdir / "hosts.yml"), "site.yml", "--tags", "always", "-v"],
        cwd=PROJECT, env=env, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False,
    )
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    cached = cached_facts(workdir / "facts")
    chosen = re.findall(r"(?<!_)python_interpreter: (\S+)", result.stdout)
    return cached, chosen


def test_a_host_rebuilt_on_the_other_distro_is_gathered_again(workdir):
    assert boot(OTHER) in ("running", "degraded")
    cached, chosen = checks(workdir, 1)
    assert cached["ansible_distribution_major_version"] == MAJOR[OTHER], cached.get("ansible_distribution_version")
    assert chosen == [INTERPRETER[OTHER]], chosen
    first_id = cached["ansible_machine_id"]

    # The same inventory name, a new machine on this distro, the cache
    # still holding the old machine's facts.
    assert boot(DISTRO) in ("running", "degraded")
    host = ssh_host(NAME)
    machine_id = host.check_output("cat /etc/machine-id")
    assert machine_id != first_id
    cached, chosen = checks(workdir, 2)
    assert cached["ansible_machine_id"] == machine_id
    assert cached["ansible_distribution_major_version"] == MAJOR[DISTRO], cached.get("ansible_distribution_version")
    # The interpreter the roles would build venvs with is this machine's.
    assert chosen == [INTERPRETER[DISTRO]], chosen
    assert host.run(f"test -x {chosen[0]}").rc == 0

    # Same machine, same boot: the cache is used (no second gathering).
    again, _ = checks(workdir, 3)
    assert again["ansible_date_time"]["epoch"] == cached["ansible_date_time"]["epoch"]
