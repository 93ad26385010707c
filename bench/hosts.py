"""Local hosts for the benchmarks: podman containers that boot systemd and
run sshd, reached by Ansible over SSH with pipelining, as real servers are.

The test scenarios reach their containers over SSH too, through `podman
exec` as ssh's ProxyCommand; the benchmarks reach theirs over the podman
network, as an operator reaches servers, and give each run its own key,
inventory, fact cache and SSH control sockets.
"""

import json
import os
import re
import subprocess
import time
from pathlib import Path

PROJECT = Path(__file__).resolve().parent.parent
NETWORK = "asgi-bench"
PREFIX = "asgi-bench-"


def run(argv, check=True, capture=True, env=None, timeout=1800, stdin=None, cwd=None):
    """Run a command; with capture, return its CompletedProcess (text)."""
    result = subprocess.run(
        argv, check=False, text=True, env=env, timeout=timeout, stdin=stdin, cwd=cwd,
        stdout=subprocess.PIPE if capture else None, stderr=subprocess.PIPE if capture else None,
    )
    if check and result.returncode != 0:
        detail = ((result.stderr or "") + (result.stdout or ""))[-3000:] if capture else ""
        raise RuntimeError(f"{' '.join(map(str, argv))} exited {result.returncode}\n{detail}")
    return result


def podman(*args, check=True, timeout=1800):
    return run(["podman", *args], check=check, timeout=timeout)


def in_host(name, script, check=True, timeout=600):
    """Run a shell script inside a host as root (for measurements and set-up
    only: provisioning goes through Ansible over SSH)."""
    return podman("exec", name, "sh", "-c", script, check=check, timeout=timeout).stdout


def base_image(distro):
    """The project's base image (molecule/resources/build-image.sh): a bare
    Debian host as it comes from a cloud provider, sshd included."""
    return f"localhost/asgi-provisioner-{distro}:latest"


class Hosts:
    """The benchmark's containers, their SSH key and their inventory."""

    def __init__(self, workdir, distro):
        self.workdir = Path(workdir)
        self.distro = distro
        self.key = self.workdir / "id_ed25519"
        self.addresses = {}
        self.workdir.mkdir(parents=True, exist_ok=True)
        if not self.key.exists():
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "asgi-bench", "-f", str(self.key)])

    def remove_all(self):
        """Containers of an earlier run (podman keeps records of stopped ones)."""
        names = podman("ps", "-a", "--format", "{{.Names}}").stdout.split()
        stale = [name for name in names if name.startswith(PREFIX)]
        if stale:
            podman("rm", "-f", "-t", "2", *stale)

    def create(self, *names):
        """Fresh hosts from the sshd image on the benchmark's network,
        booted, reachable over SSH with this run's key."""
        image = base_image(self.distro)
        if podman("network", "exists", NETWORK, check=False).returncode != 0:
            podman("network", "create", NETWORK)
        for name in names:
            podman("rm", "-f", "-t", "2", name, check=False)
            podman("run", "-d", "--name", name, "--hostname", name, "--network", NETWORK,
                   "--systemd=always", image, "/sbin/init")
        for name in names:
            self.wait_for_boot(name)
            # A new server's package lists are as old as its image: date them
            # a week back so that the first run refreshes them, as it would
            # on a cloud host, whatever the age of the local image.
            in_host(name, "touch -d '8 days ago' /var/lib/apt/lists && rm -f /var/lib/apt/periodic/update-success-stamp")
            in_host(name, "install -d -m 0700 /root/.ssh")
            podman("cp", f"{self.key}.pub", f"{name}:/root/.ssh/authorized_keys")
            in_host(name, "chown root:root /root/.ssh/authorized_keys && chmod 0600 /root/.ssh/authorized_keys")
            info = json.loads(podman("inspect", name).stdout)[0]
            self.addresses[name] = info["NetworkSettings"]["Networks"][NETWORK]["IPAddress"]
        for name in names:
            self.wait_for_ssh(name)

    @staticmethod
    def wait_for_boot(name, timeout=120):
        """Until systemd says the boot is over (right after `podman run`
        it may not answer on its bus yet)."""
        deadline = time.monotonic() + timeout
        while True:
            probe = podman("exec", name, "systemctl", "is-system-running", "--wait", check=False)
            if probe.stdout.strip() in ("running", "degraded"):
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{name} did not boot: {probe.stdout.strip()} {probe.stderr.strip()}")
            time.sleep(1)

    def wait_for_ssh(self, name, timeout=60):
        deadline = time.monotonic() + timeout
        while True:
            probe = run(["ssh", *self.ssh_options(), f"root@{self.addresses[name]}", "true"], check=False, timeout=30)
            if probe.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise RuntimeError(f"no SSH to {name}: {probe.stderr[-500:]}")
            time.sleep(1)

    def ssh_options(self):
        return ["-i", str(self.key), "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]

    def write_inventory(self, groups, variables):
        """An inventory of these hosts: groups is {group: [host, ...]},
        variables is {group: {name: value}} ('all' included)."""
        connection = {
            "ansible_user": "root",
            "ansible_python_interpreter": "/usr/bin/python3",
            "ansible_ssh_private_key_file": str(self.key),
            # ControlPersist keeps one SSH connection per host for the run,
            # as an operator's ssh config would.
            "ansible_ssh_common_args": " ".join(self.ssh_options()[2:]) + " -o ControlMaster=auto -o ControlPersist=300s",
        }
        children = {}
        for group, names in groups.items():
            children[group] = {
                "hosts": {name: {"ansible_host": self.addresses[name]} for name in names},
                "vars": variables.get(group, {}),
            }
        inventory = {"all": {"vars": {**connection, **variables.get("all", {})}, "children": children}}
        path = self.workdir / "inventory.json"
        # JSON is YAML: Ansible's yaml inventory plugin reads it.
        path.write_text(json.dumps(inventory, indent=2))
        return path


class Ansible:
    """ansible-playbook from the project directory with the project's
    ansible.cfg, over SSH, with this run's own fact cache."""

    def __init__(self, workdir):
        self.workdir = Path(workdir)
        self.env = dict(os.environ)
        self.env.update({
            "ANSIBLE_CACHE_PLUGIN_CONNECTION": str(self.workdir / "facts"),
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(self.workdir / "cp"),
            "ANSIBLE_FORCE_COLOR": "0",
            "ANSIBLE_NOCOLOR": "1",
        })

    def playbook(self, inventory, playbook, *args, callback=None, check=True, mitogen=False):
        """Run a playbook; return (seconds, CompletedProcess, recap). With
        mitogen, through Mitogen's strategy (its connection plugins keep one
        Python interpreter per host for the run)."""
        env = dict(self.env)
        if mitogen:
            import ansible_mitogen  # bench/requirements.txt

            plugins = Path(ansible_mitogen.__file__).parent / "plugins" / "strategy"
            # Mitogen's own SSH connection reads host key checking from the
            # configuration, not from the ssh options of the inventory.
            env.update({"ANSIBLE_STRATEGY_PLUGINS": str(plugins), "ANSIBLE_STRATEGY": "mitogen_linear",
                        "ANSIBLE_HOST_KEY_CHECKING": "False"})
        if callback:
            env["ANSIBLE_STDOUT_CALLBACK"] = callback
        argv = ["ansible-playbook", "-i", str(inventory), str(PROJECT / playbook), *args]
        started = time.monotonic()
        result = run(argv, check=False, env=env, cwd=PROJECT, stdin=subprocess.DEVNULL)
        seconds = time.monotonic() - started
        if check and result.returncode != 0:
            raise RuntimeError(f"{playbook} failed ({result.returncode}):\n{result.stdout[-4000:]}\n{result.stderr[-2000:]}")
        return seconds, result, recap(result.stdout) if not callback else {}


def recap(output):
    """Sum of the PLAY RECAP counters over all hosts."""
    totals = {}
    for line in output.splitlines():
        if " : ok=" not in line:
            continue
        for key, value in re.findall(r"(\w+)=(\d+)", line):
            totals[key] = totals.get(key, 0) + int(value)
    return totals
