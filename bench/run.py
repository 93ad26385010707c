#!/usr/bin/env python3
"""The benchmarks (`make bench`): local podman hosts, provisioned over SSH.

1. provisioning: site.yml on a fresh host, then again (a no-op), then a
   release of a source tree of 5,000 files;
2. serving, with wrk against one host in one run: through nginx to the
   app's socket (this project), straight to gunicorn over TCP, and through
   a naive nginx (TCP to gunicorn, no upstream keep-alive);
3. worker-count policies on that host: throughput and memory;
4. rolling restart of three app servers behind a load balancer under
   load: requests/s and latency over time, each host's window;
5. deploy of a release to the three: wheelhouse built once versus every
   host installing from the package index;
6. fleet scale: 1, 4 and 8 app servers behind a load balancer: site.yml
   fresh and no-op, deploy (index and wheelhouse), rolling restart under
   load, with wall time, controller CPU and each host's turn.

Prints a table, writes bench/results/<timestamp>.json, .png and .md, and
exits 1 if a target is missed. Configurations are compared within one
run: the machine's absolute figures are noisy.
"""

import argparse
import datetime
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from hosts import PREFIX, PROJECT, Ansible, Hosts, in_host, podman, run
from measure import (
    buckets,
    cpu_seconds,
    host_windows,
    main_pid,
    median_of,
    memory,
    set_workers,
    slowest_tasks,
    turns,
    window_stats,
    workers,
    wrk,
)

APP_HOSTS = [PREFIX + "app1", PREFIX + "app2", PREFIX + "app3"]
LB = PREFIX + "lb"
VHOST = "hello.bench.test"
UNIT = "hello.service"
SAMPLE = PROJECT / "examples" / "hello_app"
LOADGEN = PROJECT / "molecule" / "resources" / "loadgen.py"
PHASES = ["provisioning", "serving", "workers", "rolling", "deploy", "fleet"]

COMMON = {
    "app_name": "hello",
    "app_module": "main:app",
    "app_source_dir": str(SAMPLE),
    "nginx_server_names": [VHOST],
    "app_env": {"HELLO_GREETING": "Hello from the benchmarks"},
}
CLUSTER = {
    "app_servers": {
        "nginx_http_port": 8000,
        "nginx_trusted_proxies": (
            "{{ groups['load_balancers'] | map('extract', hostvars, "
            "['ansible_facts', 'default_ipv4', 'address']) | list }}"
        ),
    },
    "load_balancers": {"nginx_upstream_group": "app_servers"},
}
TARGETS = {
    "noop_over_first": ("<=", 0.15),
    "source_copy_s": ("<=", 15.0),
    "nginx_over_direct": (">=", 0.8),
    "nginx_over_naive": (">=", 1.8),
    "rolling_failed": ("==", 0),
    "fleet_noop_ratio": ("<=", 2.5),
    "fleet_rolling_failed": ("==", 0),
    "fleet_longest_turn_s": ("<=", 6.0),
    "fleet_wheelhouse_slower_at": ("==", 0),
}


def log(message):
    print(f"[{datetime.datetime.now():%H:%M:%S}] {message}", flush=True)


# --- 1. provisioning ---------------------------------------------------------

def provisioning(hosts, ansible, results):
    log("provisioning: a fresh host, site.yml twice")
    hosts.create(APP_HOSTS[0])
    inventory = hosts.write_inventory({"app_servers": [APP_HOSTS[0]]}, {"all": COMMON})
    first, _, first_recap = ansible.playbook(inventory, "site.yml")
    noop, _, noop_recap = ansible.playbook(inventory, "site.yml")
    if noop_recap.get("changed", 0) != 0:
        raise RuntimeError(f"the second site.yml run changed something: {noop_recap}")
    results["provisioning"] = {
        "first_s": round(first, 1), "noop_s": round(noop, 1), "noop_over_first": round(noop / first, 3),
        "first_recap": first_recap, "noop_recap": noop_recap,
    }
    source_tree(ansible, inventory, results)


# Task names (role prefix included) of getting a controller directory into
# a release: its digest names the release, then one archive is packed on
# the controller and unpacked on the host.
SOURCE_COPY_TASKS = [
    "app : Name the release",
    "app : Pack the source tree on the controller",
    "app : Unpack the source tree (owners and modes as packed)",
]


def source_tree(ansible, inventory, results, files=5000):
    """A release of a source tree of `files` files (the sample app plus
    assets in 50 directories and a developer's leftovers that are left
    out): site.yml's time, and the part of it spent naming, packing and
    unpacking the tree."""
    log(f"source tree: a release of {files} files")
    tree = Path(tempfile.mkdtemp(prefix="bench-tree-")) / "app"
    shutil.copytree(SAMPLE, tree)
    for index in range(files):
        folder = tree / "assets" / f"d{index % 50:02d}"
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"asset{index:05d}.json").write_text(json.dumps({"index": index, "name": f"asset {index}"}) + "\n")
    (tree / ".venv" / "lib").mkdir(parents=True)
    for index in range(500):
        (tree / ".venv" / "lib" / f"left{index}.py").write_text("# a developer's venv: never copied\n")
    try:
        seconds, result, _ = ansible.playbook(inventory, "site.yml", "-e", f"app_source_dir={tree}", callback="ansible.posix.json")
        spent = dict(slowest_tasks(result.stdout, count=1000))
        copy = {name: spent.get(name, 0.0) for name in SOURCE_COPY_TASKS}
        results["source_tree"] = {
            "files": files, "site_s": round(seconds, 1), "copy_s": round(sum(copy.values()), 2),
            "copy_tasks": copy, "slowest": slowest_tasks(result.stdout),
        }
        results["source_copy_s"] = results["source_tree"]["copy_s"]
    finally:
        shutil.rmtree(tree.parent)
    # Back to the sample app's release for the phases that follow.
    ansible.playbook(inventory, "site.yml")


# --- 2. serving -------------------------------------------------------------

def direct_unit(host):
    """hello.service as the role wrote it (same gunicorn.conf.py, workers,
    sandbox), but gunicorn binding TCP 0.0.0.0:8001 itself."""
    lines = []
    for line in in_host(host, f"cat /etc/systemd/system/{UNIT}").splitlines():
        if line.startswith(("Requires=", "After=")):
            continue
        if line.startswith("ExecStart="):
            line += " --bind 0.0.0.0:8001 --no-control-socket"
        if line.startswith("RuntimeDirectory="):
            line = "RuntimeDirectory=hello-bench-direct"
        lines.append(line)
    return "\n".join(lines) + "\n"


NAIVE_SITE = f"""# The set-up copied from a blog post: TCP to gunicorn, HTTP/1.0, a new
# connection for every request (no upstream block, no keepalive).
server {{
    listen 8002;
    server_name {VHOST};
    location / {{
        proxy_pass http://127.0.0.1:8001;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
    }}
}}
"""


def put_file(host, path, content):
    with tempfile.NamedTemporaryFile("w", delete=False) as tmp:
        tmp.write(content)
    try:
        podman("cp", tmp.name, f"{host}:{path}")
        in_host(host, f"chown root:root {path} && chmod 0644 {path}")
    finally:
        os.unlink(tmp.name)


def answers(url, timeout=30):
    deadline = time.monotonic() + timeout
    while True:
        try:
            request = urllib.request.Request(url, headers={"Host": VHOST})
            with urllib.request.urlopen(request, timeout=5) as response:
                return json.loads(response.read())
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def serving(hosts, results, seconds, rounds):
    host = APP_HOSTS[0]
    address = hosts.addresses[host]
    log("serving: nginx -> socket, direct gunicorn, naive nginx -> TCP")
    # The load generator must not take CPU from the side under test (it
    # would penalise whichever set-up runs more processes): the host gets
    # CPU 0 and wrk CPU 1 for this phase.
    cpus = os.cpu_count() or 1
    pinned = cpus >= 2
    if pinned:
        podman("update", "--cpuset-cpus", "0", host)
    put_file(host, "/etc/systemd/system/hello-bench-direct.service", direct_unit(host))
    put_file(host, "/etc/nginx/sites-enabled/zz-bench-naive", NAIVE_SITE)
    in_host(host, "systemctl daemon-reload && systemctl start hello-bench-direct && nginx -t -q && systemctl reload nginx")
    configs = {
        "nginx_socket": f"http://{address}:80/",
        "direct": f"http://{address}:8001/",
        "naive": f"http://{address}:8002/",
    }
    try:
        for url in configs.values():
            answers(url)
        runs = {name: [] for name in configs}
        for index in range(rounds):
            names = list(configs)
            names = names[index % len(names):] + names[:index % len(names)]
            for name in names:
                wrk(configs[name], VHOST, 2, cpus="1" if pinned else None)  # warm-up
                runs[name].append(measured_wrk(host, name, configs[name], seconds, "1" if pinned else None))
                r = runs[name][-1]
                log(f"  round {index + 1} {name}: {r['rps']:.0f} req/s, CPU per request: app {r['app_us']} us, "
                    f"nginx {r['nginx_us']} us, busiest worker {r['busiest_worker']:.0%} of the app's")
        master = main_pid(host, UNIT)
        mem = memory(host, workers(host, master))
    finally:
        in_host(host, "systemctl stop hello-bench-direct; rm -f /etc/systemd/system/hello-bench-direct.service "
                      "/etc/nginx/sites-enabled/zz-bench-naive; systemctl daemon-reload; systemctl reload nginx")
        if pinned:
            podman("update", "--cpuset-cpus", f"0-{cpus - 1}", host)
    summary = {name: summarise(runs[name]) for name in configs}
    ours = summary["nginx_socket"]["rps"]
    results["serving"] = {
        "seconds": seconds, "rounds": rounds, "connections": 32, "configs": summary, "runs": runs,
        "pinned": "host on CPU 0, wrk on CPU 1" if pinned else "",
        "nginx_over_direct": round(ours / summary["direct"]["rps"], 3),
        "nginx_over_naive": round(ours / summary["naive"]["rps"], 3),
        "workers": len(mem),
        "rss_per_worker_mib": round(sum(m["rss_mib"] for m in mem.values()) / len(mem), 1),
        "pss_per_worker_mib": round(sum(m["pss_mib"] for m in mem.values()) / len(mem), 1),
    }


# The unit whose workers answer each serving set-up.
SERVING_UNITS = {"nginx_socket": UNIT, "direct": "hello-bench-direct.service", "naive": "hello-bench-direct.service"}


def measured_wrk(host, name, url, seconds, cpus):
    """One wrk run with the CPU time the app's workers and nginx's workers
    spent per request (microseconds), and the busiest app worker's share
    of the app's CPU (0.5 with two workers means an even spread)."""
    app = workers(host, main_pid(host, SERVING_UNITS[name]))
    proxy = [] if name == "direct" else workers(host, main_pid(host, "nginx.service"))
    before = cpu_seconds(host, app + proxy)
    result = wrk(url, VHOST, seconds, cpus=cpus)
    after = cpu_seconds(host, app + proxy)
    used = {pid: after[pid] - before[pid] for pid in before if pid in after}
    per_request = 1e6 / max(result["requests"], 1)
    app_used = [used.get(pid, 0.0) for pid in app]
    return result | {
        "app_us": round(sum(app_used) * per_request, 1),
        "nginx_us": round(sum(used.get(pid, 0.0) for pid in proxy) * per_request, 1),
        "busiest_worker": round(max(app_used) / sum(app_used), 3) if sum(app_used) else 0.0,
    }


def summarise(runs):
    keys = ["rps", "p50_ms", "p99_ms"] + [key for key in ("app_us", "nginx_us", "busiest_worker") if key in runs[0]]
    return {key: median_of(runs, key) for key in keys} | {
        "rps_min": min(r["rps"] for r in runs), "rps_max": max(r["rps"] for r in runs),
        "errors": sum(r["errors"] for r in runs), "requests": sum(r["requests"] for r in runs)}


# --- 3. worker policies -----------------------------------------------------

def worker_policies(hosts, results, seconds, rounds):
    host = APP_HOSTS[0]
    url = f"http://{hosts.addresses[host]}:80/"
    cores = int(in_host(host, "nproc").strip())
    default = len(workers(host, main_pid(host, UNIT)))
    policies = {
        "image default: 1 per core, min 2": max(2, cores),
        "n + 1": cores + 1,
        "2n + 1": 2 * cores + 1,
        "project default": default,
    }
    log(f"workers: {policies} on {cores} cores")
    counts = sorted(set(policies.values()))
    runs = {count: [] for count in counts}
    mem = {}
    for index in range(rounds):
        order = counts if index % 2 == 0 else counts[::-1]
        for count in order:
            master = set_workers(host, UNIT, count)
            wrk(url, VHOST, 2)
            runs[count].append(wrk(url, VHOST, seconds))
            log(f"  round {index + 1} {count} workers: {runs[count][-1]['rps']:.0f} req/s")
            found = memory(host, [master, *workers(host, master)])
            mem[count] = {
                "total_pss_mib": round(sum(m["pss_mib"] for m in found.values()), 1),
                "total_rss_mib": round(sum(m["rss_mib"] for m in found.values()), 1),
            }
    set_workers(host, UNIT, default)
    results["workers"] = {
        "cores": cores, "policies": policies,
        "by_count": {str(count): summarise(runs[count]) | mem[count] for count in counts},
        "runs": {str(count): runs[count] for count in counts},
    }


# --- 4. rolling restart -----------------------------------------------------

def cluster(hosts, ansible, results):
    log("cluster: a load balancer and two more app servers, site.yml")
    hosts.create(LB, *APP_HOSTS[1:])
    inventory = hosts.write_inventory(
        {"load_balancers": [LB], "app_servers": APP_HOSTS},
        {"all": COMMON, **CLUSTER},
    )
    seconds, _, summary = ansible.playbook(inventory, "site.yml")
    results["cluster_site_s"] = round(seconds, 1)
    results["cluster_site_recap"] = summary
    answers(f"http://{hosts.addresses[LB]}/")
    return inventory


def rolling(hosts, ansible, inventory, results, workdir, lead=15, tail=10):
    log("rolling restart under load through the load balancer")
    stop = workdir / "stop-load"
    stop.unlink(missing_ok=True)
    timeline_file = workdir / "rolling-timeline.json"
    load = subprocess.Popen(
        [sys.executable, str(LOADGEN), "--url", f"http://{hosts.addresses[LB]}/", "--host", VHOST,
         "--concurrency", "8", "--duration", "280", "--max-requests", "1000000",
         "--stop-file", str(stop), "--timeline", str(timeline_file)],
        stdout=subprocess.PIPE, text=True)
    try:
        time.sleep(lead)
        started = time.time()
        _, result, _ = ansible.playbook(inventory, "playbooks/rolling_restart.yml", callback="ansible.posix.json")
        ended = time.time()
        time.sleep(tail)
    finally:
        stop.touch()
        out, _ = load.communicate(timeout=120)
    summary = json.loads(out)
    timeline = json.loads(timeline_file.read_text())
    windows = host_windows(result.stdout, "Restart the hosts, one batch at a time")
    t0 = timeline["t0"]
    results["rolling"] = {
        "duration_s": round(ended - started, 1),
        "requests": summary["requests"], "failed": summary["failed"],
        "retried_stale_connections": summary["retried_stale_connections"],
        "hosts_answering": summary["hosts"],
        "before": window_stats(timeline, t0 + 2, started),
        "during": window_stats(timeline, started, ended),
        "after": window_stats(timeline, ended, t0 + summary["seconds"]),
        "playbook": [started, ended],
        "windows": windows,
        "series": buckets(timeline),
    }
    results["rolling_failed"] = summary["failed"]


# --- 5. deploy: wheelhouse versus index ---------------------------------------

def release(workdir, version):
    """The sample app's source as release `version`."""
    source = workdir / f"release-{version}"
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(SAMPLE, source, ignore=shutil.ignore_patterns("__pycache__"))
    (source / "VERSION").write_text(version + "\n")
    return source


def controller_bundles():
    """Where deploy.yml keeps bundles and packed source trees on the
    controller (the app role's app_bundle_dir default)."""
    cache = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache) / "asgi-provisioner" / "bundles"


def cold_caches(apps):
    """Empty the package caches and build directory on every app server,
    and the sample app's bundles and packed trees on the controller: what a
    deploy measures is fetching the dependencies once or per host, the
    bundle built, not reused from an earlier deploy of the same release."""
    for host in apps:
        in_host(host, "rm -rf /var/cache/asgi-uv/* /root/.cache/pip /var/cache/asgi-build/hello")
    for kept in controller_bundles().glob(f"{COMMON['app_name']}-*.tar.*"):
        kept.unlink()


def deploys(hosts, ansible, inventory, results, workdir):
    timings = {}
    for version, wheelhouse in (("2.0.0", False), ("3.0.0", True)):
        mode = "wheelhouse" if wheelhouse else "index"
        log(f"deploy {version} to three hosts, {mode}")
        source = release(workdir, version)
        cold_caches(APP_HOSTS)
        seconds, _, summary = ansible.playbook(
            inventory, "playbooks/deploy.yml",
            "-e", f"app_source_dir={source}", "-e", f"deploy_wheelhouse={str(wheelhouse).lower()}")
        seen = {answers(f"http://{hosts.addresses[LB]}/")["version"] for _ in range(6)}
        if seen != {version}:
            raise RuntimeError(f"after the {mode} deploy the load balancer answered {seen}")
        timings[mode] = {"seconds": round(seconds, 1), "version": version, "recap": summary}
    results["deploy"] = timings


# --- 6. fleet scale ------------------------------------------------------------

FLEET_SIZES = (1, 4, 8)


def controller_cpu():
    """CPU seconds the controller's child processes (ansible-playbook and
    its forks) have used so far."""
    times = os.times()
    return times.children_user + times.children_system


def timed(ansible, inventory, playbook, *args, callback=None, mitogen=False):
    """A playbook run: wall seconds, controller CPU seconds, result, recap."""
    cpu = controller_cpu()
    seconds, result, summary = ansible.playbook(inventory, playbook, *args, callback=callback, mitogen=mitogen)
    return round(seconds, 1), round(controller_cpu() - cpu, 1), result, summary


# Tasks that run on the controller alone (no connection to the host).
CONTROLLER_ACTIONS = {
    "ansible.builtin.assert", "ansible.builtin.set_fact", "ansible.builtin.include_tasks",
    "ansible.builtin.include_role", "ansible.builtin.import_tasks", "ansible.builtin.import_role",
    "ansible.builtin.group_by", "ansible.builtin.validate_argument_spec", "ansible.builtin.debug",
    "ansible.builtin.fail", "ansible.builtin.meta", "ansible.builtin.add_host",
}


def task_shape(json_output, group_hosts):
    """How many tasks a run gave one host of each group, by kind: "remote"
    (ran and reached the host), "local" (ran on the controller alone) and
    "skipped"; from ansible.posix.json's output."""
    report = json.loads(json_output[json_output.index("{"):])
    shape = {}
    for group, host in group_hosts.items():
        counts = {"remote": 0, "local": 0, "skipped": 0}
        for play in report["plays"]:
            for task in play["tasks"]:
                result = task["hosts"].get(host)
                if result is None:
                    continue
                kind = ("skipped" if result.get("skipped")
                        else "local" if result.get("action") in CONTROLLER_ACTIONS else "remote")
                counts[kind] += 1
        shape[group] = counts
    return shape


def floor_playbook(path, shape):
    """Ansible's own floor for a run of that shape: one play per group with
    as many tasks per host, each as cheap as its kind allows (`raw: true`
    for a task that reaches the host, an assert of `true` for one on the
    controller, a task whose condition is false for a skipped one)."""
    plays = []
    for group, counts in shape.items():
        tasks = ([{"name": f"remote {i}", "ansible.builtin.raw": "true", "changed_when": False}
                  for i in range(counts["remote"])]
                 + [{"name": f"local {i}", "ansible.builtin.assert": {"that": "true", "quiet": True}}
                    for i in range(counts["local"])]
                 + [{"name": f"skipped {i}", "ansible.builtin.debug": {"msg": "never"}, "when": "false"}
                    for i in range(counts["skipped"])])
        plays.append({"name": f"The floor of {group}", "hosts": group, "gather_facts": False, "tasks": tasks})
    path.write_text(json.dumps(plays, indent=1))
    return path


def turn_summary(found):
    seconds = sorted(turn["seconds"] for turn in found.values())
    if not seconds:
        return {}
    longest = max(found.values(), key=lambda turn: turn["seconds"])
    return {"median_s": round(median_of([{"s": s} for s in seconds], "s"), 2), "longest_s": seconds[-1],
            "longest_parts": longest["parts"], "turns": found}


def deploy_pairs(hosts, ansible, inventory, workdir, size, apps, lb, row):
    """deploy.yml of a new release from the index and with the wheelhouse,
    cold caches each time. From 4 hosts on, twice each in the order index,
    wheelhouse, wheelhouse, index, so that a drift of the machine's speed
    during the phase weighs on both alike (single runs here differ by 10
    to 20 % from one minute to the next); each mode's figure is the mean.
    Slowest tasks and host turns are those of each mode's last run."""
    order = ["index", "wheelhouse"] + (["wheelhouse", "index"] if size >= 4 else [])
    runs = {"index": [], "wheelhouse": []}
    for number, mode in enumerate(order, start=2):
        version = f"{number}.0.0"
        log(f"fleet of {size}: deploy {version}, {mode}, cold caches")
        cold_caches(apps)
        wall, cpu, result, _ = timed(
            ansible, inventory, "playbooks/deploy.yml", "-e", f"app_source_dir={release(workdir, version)}",
            "-e", f"deploy_wheelhouse={str(mode == 'wheelhouse').lower()}", callback="ansible.posix.json")
        seen = {answers(f"http://{hosts.addresses[lb]}/")["version"] for _ in range(6)}
        if seen != {version}:
            raise RuntimeError(f"after the {mode} deploy to {size} hosts the load balancer answered {seen}")
        runs[mode].append((wall, cpu))
        row[f"deploy_{mode}_slowest"] = slowest_tasks(result.stdout)
        row[f"deploy_{mode}_turns"] = turn_summary(turns(result.stdout, "Switch the hosts, one batch at a time"))
    for mode, found in runs.items():
        row[f"deploy_{mode}_s"] = round(sum(wall for wall, _ in found) / len(found), 1)
        row[f"deploy_{mode}_cpu_s"] = round(sum(cpu for _, cpu in found) / len(found), 1)
        row[f"deploy_{mode}_runs_s"] = [wall for wall, _ in found]


# The lighter loads of the fleet's largest size: each client's pause
# between requests, in seconds.
PACED_PAUSES = (0.005, 0.02)


def rolling_under_load(hosts, ansible, inventory, workdir, lb, name, pause=0.0):
    """rolling_restart.yml while 8 clients send requests through the load
    balancer (each pausing `pause` seconds between its requests): wall
    and CPU time, the requests, failed and truncated ones, the request
    rate over the run, and each host's turn."""
    stop = workdir / f"stop-load-{name}"
    load = subprocess.Popen(
        [sys.executable, str(LOADGEN), "--url", f"http://{hosts.addresses[lb]}/", "--host", VHOST,
         "--concurrency", "8", "--duration", "280", "--max-requests", "1000000", "--pause", str(pause),
         "--stop-file", str(stop)],
        stdout=subprocess.PIPE, text=True)
    started = time.monotonic()
    try:
        time.sleep(3)
        wall, cpu, result, _ = timed(ansible, inventory, "playbooks/rolling_restart.yml", callback="ansible.posix.json")
        time.sleep(2)
    finally:
        stop.touch()
        out, _ = load.communicate(timeout=120)
    seconds = time.monotonic() - started
    summary = json.loads(out)
    return {
        "pause": pause, "s": wall, "cpu_s": cpu, "requests": summary["requests"],
        "failed": summary["failed"], "truncated": summary["truncated"],
        "per_s": round(summary["requests"] / seconds),
        "turns": turn_summary(turns(result.stdout, "Restart the hosts, one batch at a time")),
    }


def fleet(hosts, ansible, results, workdir, sizes):
    """For each size: a load balancer and N fresh app servers; site.yml
    fresh and again (no-op), deploy.yml of a new release from the index
    and with the wheelhouse (cold caches both), rolling_restart.yml under
    load through the load balancer. Wall time, per host, the controller's
    CPU, and each host's turn in the rolling runs."""
    results["fleet"] = {}
    for size in sizes:
        hosts.remove_all()
        apps = [f"{PREFIX}f{size}-app{i}" for i in range(1, size + 1)]
        lb = f"{PREFIX}f{size}-lb"
        log(f"fleet of {size}: creating {size} app servers and a load balancer")
        hosts.create(lb, *apps)
        inventory = hosts.write_inventory({"load_balancers": [lb], "app_servers": apps}, {"all": COMMON, **CLUSTER})
        row = {"hosts": size}
        log(f"fleet of {size}: site.yml on fresh hosts")
        row["site_s"], row["site_cpu_s"], _, _ = timed(ansible, inventory, "site.yml")
        # The no-op three times, each beside Ansible's floor for a run of
        # its shape (the same number of tasks per host, each trivial), so
        # that the ratio between sizes can be read against what Ansible
        # itself costs on this controller. The shape comes from one more
        # run with the JSON callback.
        log(f"fleet of {size}: site.yml again (no-op), and Ansible's floor for its shape")
        _, _, shaped, _ = timed(ansible, inventory, "site.yml", callback="ansible.posix.json")
        shape = task_shape(shaped.stdout, {"load_balancers": lb, "app_servers": apps[0]})
        floor = floor_playbook(workdir / f"floor-{size}.yml", shape)
        noops, floors = [], []
        for _ in range(3):
            wall, cpu, _, noop = timed(ansible, inventory, "site.yml")
            if noop.get("changed", 0) != 0:
                raise RuntimeError(f"the second site.yml run on {size} hosts changed something: {noop}")
            noops.append((wall, cpu))
            floors.append(timed(ansible, inventory, floor)[:2])
        row["noop_s"], row["noop_cpu_s"] = sorted(noops)[1]
        row["noop_runs_s"] = sorted(wall for wall, _ in noops)
        row["floor_s"], row["floor_cpu_s"] = sorted(floors)[1]
        row["floor_runs_s"] = sorted(wall for wall, _ in floors)
        row["task_shape"] = shape
        log(f"fleet of {size}: site.yml again, through Mitogen")
        row["noop_mitogen_s"], row["noop_mitogen_cpu_s"], _, noop = timed(ansible, inventory, "site.yml", mitogen=True)
        if noop.get("changed", 0) != 0:
            raise RuntimeError(f"the no-op site.yml through Mitogen on {size} hosts changed something: {noop}")
        answers(f"http://{hosts.addresses[lb]}/")
        deploy_pairs(hosts, ansible, inventory, workdir, size, apps, lb, row)
        log(f"fleet of {size}: rolling restart under load")
        rolling = rolling_under_load(hosts, ansible, inventory, workdir, lb, f"{size}")
        row.update({f"rolling_{key}": value for key, value in rolling.items() if key != "pause"})
        # At the largest size, the same run again under lighter loads (the
        # 8 clients pausing between requests): how a turn depends on the
        # CPU the load leaves the restarting host, every server of the
        # fleet being a container on this machine's two cores.
        if size == max(sizes):
            row["rolling_paced"] = []
            for pause in PACED_PAUSES:
                log(f"fleet of {size}: rolling restart under a lighter load ({pause * 1000:g} ms between requests)")
                row["rolling_paced"].append(rolling_under_load(hosts, ansible, inventory, workdir, lb, f"{size}-{pause}", pause))
        log(f"fleet of {size}: {row['site_s']} s fresh, {row['noop_s']} s no-op, deploy index "
            f"{row['deploy_index_s']} s / wheelhouse {row['deploy_wheelhouse_s']} s, rolling {row['rolling_s']} s, "
            f"{row['rolling_requests']} requests, {row['rolling_failed']} failed")
        results["fleet"][str(size)] = row
    hosts.remove_all()
    sizes_run = sorted(int(size) for size in results["fleet"])
    if len(sizes_run) > 1:
        one, most = results["fleet"][str(sizes_run[0])], results["fleet"][str(sizes_run[-1])]
        results["fleet_noop_ratio"] = round(most["noop_s"] / one["noop_s"], 2)
        results["fleet_floor_ratio"] = round(most["floor_s"] / one["floor_s"], 2)
    results["fleet_rolling_failed"] = sum(
        row["rolling_failed"] + sum(paced["failed"] for paced in row.get("rolling_paced", []))
        for row in results["fleet"].values())
    results["fleet_longest_turn_s"] = max(
        (row[key].get("longest_s", 0) for row in results["fleet"].values()
         for key in ("rolling_turns", "deploy_index_turns", "deploy_wheelhouse_turns")), default=0)
    wheel_slower = [size for size, row in results["fleet"].items()
                    if int(size) >= 4 and row["deploy_wheelhouse_s"] > row["deploy_index_s"]]
    results["fleet_wheelhouse_slower_at"] = len(wheel_slower)


# --- report -----------------------------------------------------------------

def verdicts(results):
    found = {
        "noop_over_first": results.get("provisioning", {}).get("noop_over_first"),
        "source_copy_s": results.get("source_copy_s"),
        "nginx_over_direct": results.get("serving", {}).get("nginx_over_direct"),
        "nginx_over_naive": results.get("serving", {}).get("nginx_over_naive"),
        "rolling_failed": results.get("rolling_failed"),
        "fleet_noop_ratio": results.get("fleet_noop_ratio"),
        "fleet_rolling_failed": results.get("fleet_rolling_failed"),
        "fleet_longest_turn_s": results.get("fleet_longest_turn_s"),
        "fleet_wheelhouse_slower_at": results.get("fleet_wheelhouse_slower_at"),
    }
    checks = {}
    for key, value in found.items():
        if value is None:
            continue
        op, target = TARGETS[key]
        met = {"<=": value <= target, ">=": value >= target, "==": value == target}[op]
        checks[key] = {"value": value, "target": f"{op} {target}", "met": met}
    return checks


def table(results):
    rows = []
    add = rows.append
    prov = results.get("provisioning")
    if prov:
        add(("Provisioning", "", ""))
        add(("site.yml, fresh host", f"{prov['first_s']} s", recap_text(prov["first_recap"])))
        add(("site.yml again (no-op)", f"{prov['noop_s']} s", recap_text(prov["noop_recap"])))
    tree = results.get("source_tree")
    if tree:
        add((f"site.yml, a release of {tree['files']} files", f"{tree['site_s']} s",
             f"of which naming, packing and unpacking the tree {tree['copy_s']} s"))
    serve = results.get("serving")
    if serve:
        pinning = f", {serve['pinned']}" if serve.get("pinned") else ""
        add((f"Serving (wrk -c{serve['connections']}, {serve['rounds']} x {serve['seconds']} s, median{pinning})", "", ""))
        labels = {"nginx_socket": "nginx -> unix socket (this project)", "direct": "gunicorn direct (TCP)",
                  "naive": "naive nginx -> TCP, no keep-alive"}
        for name, label in labels.items():
            c = serve["configs"][name]
            spread = f"{c['rps_min']:.0f}-{c['rps_max']:.0f}, " if "rps_min" in c else ""
            cpu = (f", CPU/request app {c['app_us']} us + nginx {c['nginx_us']} us, busiest worker {c['busiest_worker']:.0%}"
                   if "app_us" in c else "")
            add((label, f"{c['rps']:.0f} req/s", f"{spread}p50 {c['p50_ms']} ms, p99 {c['p99_ms']} ms, errors {c['errors']}{cpu}"))
        add(("per worker", f"{serve['rss_per_worker_mib']} MiB RSS", f"{serve['pss_per_worker_mib']} MiB PSS, {serve['workers']} workers"))
    work = results.get("workers")
    if work:
        add((f"Workers ({work['cores']} cores)", "", ""))
        for label, count in work["policies"].items():
            c = work["by_count"][str(count)]
            add((f"{label}: {count}", f"{c['rps']:.0f} req/s",
                 f"p99 {c['p99_ms']} ms, {c['total_pss_mib']} MiB PSS ({c['total_rss_mib']} RSS) in all"))
    roll = results.get("rolling")
    if roll:
        add(("Rolling restart, 3 app servers, 8 clients via the LB", "", ""))
        add(("duration", f"{roll['duration_s']} s", f"{roll['requests']} requests, {roll['failed']} failed"))
        for phase in ("before", "during", "after"):
            w = roll[phase]
            add((phase, f"{w['rps']:.0f} req/s", f"p50 {w['p50_ms']} ms, p99 {w['p99_ms']} ms, failed {w['failed']}"))
    dep = results.get("deploy")
    if dep:
        add(("Deploy of a release to 3 hosts (cold caches)", "", ""))
        for mode, d in dep.items():
            add((f"{mode} ({d['version']})", f"{d['seconds']} s", recap_text(d["recap"])))
    fleet_rows = results.get("fleet")
    if fleet_rows:
        add(("Fleet: N app servers behind one load balancer (wall s, controller CPU s)", "", ""))
        for size, row in sorted(fleet_rows.items(), key=lambda item: int(item[0])):
            n = int(size)
            add((f"{n} hosts: site.yml fresh / no-op", f"{row['site_s']} / {row['noop_s']} s",
                 f"per host {row['site_s'] / n:.1f} / {row['noop_s'] / n:.1f} s, CPU {row['site_cpu_s']} / {row['noop_cpu_s']} s"))
            if "floor_s" in row:
                runs = " / ".join(str(wall) for wall in row["noop_runs_s"])
                shape = "; ".join(f"{group} {counts['remote']} remote, {counts['local']} controller, "
                                  f"{counts['skipped']} skipped" for group, counts in row["task_shape"].items())
                add((f"{n} hosts: no-op runs (median above)", runs, f"tasks per host: {shape}"))
                add((f"{n} hosts: Ansible's floor for that shape", f"{row['floor_s']} s",
                     f"runs {' / '.join(str(wall) for wall in row['floor_runs_s'])}, CPU {row['floor_cpu_s']} s"))
            add((f"{n} hosts: no-op through Mitogen", f"{row['noop_mitogen_s']} s", f"CPU {row['noop_mitogen_cpu_s']} s"))
            runs = "".join(f", {mode} runs {' / '.join(str(wall) for wall in row[f'deploy_{mode}_runs_s'])} s"
                           for mode in ("index", "wheelhouse") if len(row.get(f"deploy_{mode}_runs_s", [])) > 1)
            add((f"{n} hosts: deploy index / wheelhouse", f"{row['deploy_index_s']} / {row['deploy_wheelhouse_s']} s",
                 f"CPU {row['deploy_index_cpu_s']} / {row['deploy_wheelhouse_cpu_s']} s{runs}"))
            rolling = {key: row.get(f"rolling_{key}") for key in ("requests", "per_s", "failed", "turns")}
            add((f"{n} hosts: rolling restart, 8 clients", f"{row['rolling_s']} s", rolling_detail(rolling)))
            for paced in row.get("rolling_paced", []):
                add((f"{n} hosts: the same, {paced['pause'] * 1000:g} ms between a client's requests",
                     f"{paced['s']} s", rolling_detail(paced)))
        if results.get("fleet_floor_ratio"):
            add(("no-op, largest size over smallest", f"{results['fleet_noop_ratio']}",
                 f"Ansible's floor for the same tasks per host: {results['fleet_floor_ratio']}"))
    if results.get("targets"):
        add(("Targets", "", ""))
    for key, check in results.get("targets", {}).items():
        add((f"target {key} {check['target']}", str(check["value"]), "met" if check["met"] else "MISSED"))
    return rows


def rolling_detail(run):
    """A rolling restart under load in one line: requests (and their rate),
    failed ones, the median and longest turn and where the longest went."""
    turn = run["turns"]
    rate = f" ({run['per_s']}/s)" if run.get("per_s") else ""
    return (f"{run['requests']} requests{rate}, {run['failed']} failed; turn median {turn.get('median_s')} s, "
            f"longest {turn.get('longest_s')} s {turn.get('longest_parts', {})}")


def recap_text(summary):
    return ", ".join(f"{key} {summary.get(key, 0)}" for key in ("ok", "changed", "skipped"))


def print_table(rows):
    if not rows:
        return
    width = max(len(r[0]) for r in rows) + 2
    for label, value, detail in rows:
        if not value and not detail:
            print(f"\n{label}")
        else:
            print(f"  {label:<{width}}{value:>16}   {detail}")


def markdown(rows):
    lines = []
    for label, value, detail in rows:
        if not value and not detail:
            lines += ["", f"**{label}**", "", "| | | |", "|---|---:|---|"]
        else:
            lines.append(f"| {label} | {value} | {detail} |")
    return "\n".join(lines).strip() + "\n"


def report(results, base):
    """Print the table; write it as base.md and the figure as base.png."""
    rows = table(results)
    base.with_suffix(".md").write_text(markdown(rows))
    if "rolling" in results or "serving" in results or "fleet" in results:
        from plot import plot  # matplotlib: only when there is something to draw
        plot(results, base.with_suffix(".png"))
    print_table(rows)
    print(f"\nresults: bench/results/{base.name}.json (.md, .png)")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--distro", default=os.environ.get("MOLECULE_DISTRO", "debian12"))
    parser.add_argument("--seconds", type=int, default=10, help="length of each wrk run")
    parser.add_argument("--rounds", type=int, default=5, help="runs of each configuration, interleaved")
    parser.add_argument("--only", default=",".join(PHASES), help="phases to run (provisioning always runs)")
    parser.add_argument("--fleet", default=",".join(map(str, FLEET_SIZES)), help="app server counts of the fleet phase")
    parser.add_argument("--keep", action="store_true", help="leave the hosts running afterwards")
    parser.add_argument("--report", metavar="JSON", help="only write the table, .md and .png of an earlier run")
    args = parser.parse_args()
    only = set(args.only.split(","))
    if args.report:
        results = json.loads(Path(args.report).read_text())
        report(results, Path(args.report).with_suffix(""))
        return 0

    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    workdir = PROJECT / ".cache" / "bench" / stamp
    hosts = Hosts(workdir, args.distro)
    ansible = Ansible(workdir)
    results = {
        "started": stamp, "distro": args.distro, "cpus": os.cpu_count(), "kernel": platform.release(),
        "ansible": run(["ansible", "--version"]).stdout.splitlines()[0],
        "wrk": run(["wrk", "-v"], check=False).stdout.splitlines()[0],
    }
    hosts.remove_all()
    try:
        provisioning(hosts, ansible, results)
        if "serving" in only:
            serving(hosts, results, args.seconds, args.rounds)
        if "workers" in only:
            worker_policies(hosts, results, args.seconds, args.rounds)
        if only & {"rolling", "deploy"}:
            inventory = cluster(hosts, ansible, results)
            if "rolling" in only:
                rolling(hosts, ansible, inventory, results, workdir)
            if "deploy" in only:
                deploys(hosts, ansible, inventory, results, workdir)
        if "fleet" in only:
            fleet(hosts, ansible, results, workdir, [int(n) for n in args.fleet.split(",")])
    finally:
        if not args.keep:
            hosts.remove_all()
        results["targets"] = verdicts(results)
        out = PROJECT / "bench" / "results"
        out.mkdir(exist_ok=True)
        (out / f"{stamp}.json").write_text(json.dumps(results, indent=1) + "\n")
        report(results, out / stamp)
    missed = [key for key, check in results["targets"].items() if not check["met"]]
    if missed:
        print(f"targets missed: {', '.join(missed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
