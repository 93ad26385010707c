"""What the benchmarks measure with: wrk (Debian's package) and its
latency distribution, processes' memory read from /proc inside a host,
gunicorn's worker count, the load generator's timeline, and each host's
window in a rolling run (from Ansible's JSON callback)."""

import datetime
import json
import math
import re
import statistics
import time

from hosts import in_host, run

UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def wrk(url, host_header, seconds, connections=32, threads=2, cpus=None):
    """One wrk run: requests/s, p50/p99 latency (ms), errors. `cpus` (a
    taskset list such as "1") keeps wrk on those CPUs."""
    argv = ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency",
            "-H", f"Host: {host_header}", url]
    if cpus:
        argv = ["taskset", "-c", cpus, *argv]
    return parse_wrk(run(argv, timeout=seconds + 60).stdout)


def parse_wrk(output):
    def latency(percent):
        found = re.search(rf"^\s+{percent}%\s+([\d.]+)(us|ms|s)\s*$", output, re.MULTILINE)
        return round(float(found.group(1)) * UNITS_MS[found.group(2)], 3) if found else None

    rps = re.search(r"^Requests/sec:\s+([\d.]+)", output, re.MULTILINE)
    total = re.search(r"^\s+(\d+) requests in", output, re.MULTILINE)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    sockets = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sockets.groups())) if sockets else 0)
    if not rps or not total:
        raise RuntimeError(f"wrk printed no result:\n{output}")
    return {"rps": float(rps.group(1)), "requests": int(total.group(1)), "errors": errors,
            "p50_ms": latency(50), "p99_ms": latency(99)}


def main_pid(host, unit):
    return int(in_host(host, f"systemctl show -P MainPID {unit}").strip())


def workers(host, master):
    return [int(pid) for pid in in_host(host, f"pgrep -P {master} || true").split()]


def memory(host, pids):
    """RSS and PSS (MiB) of each process: PSS shares the pages forked
    workers have in common, so it is what each really costs."""
    script = " ; ".join(
        f"echo {pid} $(awk '/^Rss:/{{r=$2}} /^Pss:/{{p=$2}} END{{print r, p}}' /proc/{pid}/smaps_rollup)"
        for pid in pids
    )
    found = {}
    for line in in_host(host, script).splitlines():
        pid, rss, pss = line.split()
        found[int(pid)] = {"rss_mib": round(int(rss) / 1024, 1), "pss_mib": round(int(pss) / 1024, 1)}
    return found


def cpu_seconds(host, pids):
    """CPU time (user + system, seconds) each process has used so far."""
    script = " ; ".join(f"echo {pid} $(cut -d' ' -f14,15 /proc/{pid}/stat)" for pid in pids)
    ticks = int(in_host(host, "getconf CLK_TCK").strip())
    found = {}
    for line in in_host(host, script).splitlines():
        pid, *times = line.split()
        found[int(pid)] = sum(int(t) for t in times) / ticks if times else 0.0
    return found


def set_workers(host, unit, count, timeout=60):
    """Grow or shrink gunicorn's workers to `count` with TTIN/TTOU (one
    worker per signal), then wait until exactly that many run and have
    imported the app."""
    master = main_pid(host, unit)
    deadline = time.monotonic() + timeout
    while True:
        now = len(workers(host, master))
        if now == count:
            break
        if time.monotonic() > deadline:
            raise RuntimeError(f"{unit}: {now} workers, wanted {count}")
        signal = "TTIN" if now < count else "TTOU"
        for _ in range(abs(count - now)):
            in_host(host, f"kill -s {signal} {master}")
            time.sleep(0.2)
        time.sleep(1.5)
    time.sleep(2)
    return master


def buckets(timeline, width=1.0):
    """Per-second requests, failures and latency percentiles of a load
    generator timeline; times are Unix seconds."""
    t0 = timeline["t0"]
    slots = {}
    for start, latency_ms, ok in timeline["records"]:
        slots.setdefault(int(start // width), []).append((latency_ms, ok))
    series = []
    for slot in range(max(slots) + 1 if slots else 0):
        items = slots.get(slot, [])
        latencies = sorted(latency for latency, _ in items)
        series.append({
            "t": round(t0 + slot * width, 3),
            "requests": len(items),
            "failed": sum(1 for _, ok in items if not ok),
            "p50_ms": percentile(latencies, 50),
            "p99_ms": percentile(latencies, 99),
        })
    return series


def percentile(sorted_values, percent):
    if not sorted_values:
        return None
    # Nearest rank: the smallest value with at least percent% at or below it.
    index = min(len(sorted_values) - 1, max(0, math.ceil(percent / 100 * len(sorted_values)) - 1))
    return round(sorted_values[index], 2)


def window_stats(timeline, start, end):
    """Requests, failures and p50/p99 of the requests started in [start, end)."""
    t0 = timeline["t0"]
    chosen = [(lat, ok) for s, lat, ok in timeline["records"] if start <= t0 + s < end]
    latencies = sorted(lat for lat, _ in chosen)
    seconds = max(end - start, 1e-9)
    return {"seconds": round(end - start, 1), "requests": len(chosen), "failed": sum(1 for _, ok in chosen if not ok),
            "rps": round(len(chosen) / seconds, 1),
            "p50_ms": percentile(latencies, 50), "p99_ms": percentile(latencies, 99)}


def host_windows(json_output, play_name):
    """{host: [start, end]} (Unix seconds) of each batch of the play named
    play_name, from ansible.posix.json's output: with `serial`, every
    batch is reported as a play of its own, with its tasks' times."""
    report = json.loads(json_output[json_output.index("{"):])
    windows = {}
    for play in report["plays"]:
        if play["play"]["name"] != play_name:
            continue
        hosts = set()
        starts, ends = [], []
        for task in play["tasks"]:
            hosts.update(task["hosts"])
            starts.append(unix(task["task"]["duration"]["start"]))
            if task["task"]["duration"].get("end"):
                ends.append(unix(task["task"]["duration"]["end"]))
        for host in hosts:
            windows[host] = [min(starts), max(ends)]
    return windows


def unix(stamp):
    return datetime.datetime.fromisoformat(stamp).timestamp()


def median_of(runs, key):
    values = [r[key] for r in runs if r.get(key) is not None]
    return round(statistics.median(values), 3) if values else None


# What each part of a host's turn in a rolling run is: task names (without
# the role's prefix) of the rollout and the role entry points it includes.
# The load balancer switch runs twice: out (drain), then back (undrain).
SWITCH = "Switch the server on each load balancer"
TURN_PARTS = {
    "drain": ("Wait for the requests in flight to finish",),
    "switch": ("Read the live and previous releases from their links",
               "Switch `current` to the release (an atomic rename of the link)"),
    "restart": ("Restart the app's service", "Restart the app's program", "Restart the app's watcher"),
    "health": ("Wait for the app's health endpoint",),
}


def turn_part(name, switches_seen):
    name = name.split(" : ", 1)[-1]
    if name.startswith(SWITCH):
        return "drain" if switches_seen == 0 else "undrain"
    for part, names in TURN_PARTS.items():
        if name in names:
            return part
    return None


def turns(json_output, play_name):
    """Each host's turn in a rolling run (from ansible.posix.json's output,
    where every serial batch is a play of its own): seconds from taking it
    out of the load balancers (or from its restart, when it was not
    drained) to the end of putting it back, and how they split between
    drain (switch and in-flight wait), switch, restart, health and
    undrain; the rest is the playbook's own overhead (includes, argument
    checks, small tasks between)."""
    report = json.loads(json_output[json_output.index("{"):])
    found = {}
    for play in report["plays"]:
        if play["play"]["name"] != play_name:
            continue
        parts = {part: 0.0 for part in (*TURN_PARTS, "undrain")}
        marks, hosts, switches = [], set(), 0
        for task in play["tasks"]:
            duration = task["task"]["duration"]
            hosts.update(task["hosts"])
            part = turn_part(task["task"]["name"], switches)
            if part is None or not duration.get("end"):
                continue
            switches += task["task"]["name"].split(" : ", 1)[-1].startswith(SWITCH)
            start, end = unix(duration["start"]), unix(duration["end"])
            parts[part] += end - start
            marks += [start, end]
        if not marks:
            continue
        total = max(marks) - min(marks)
        parts = {part: round(value, 2) for part, value in parts.items()}
        parts["overhead"] = round(total - sum(parts.values()), 2)
        for host in hosts:
            found[host] = {"seconds": round(total, 2), "parts": parts}
    return found


def slowest_tasks(json_output, count=8):
    """The tasks of a run that took longest (wall seconds from the first
    host's start to the last host's end, the same task name in several
    plays added up): where a playbook's time goes."""
    report = json.loads(json_output[json_output.index("{"):])
    spent = {}
    for play in report["plays"]:
        for task in play["tasks"]:
            duration = task["task"]["duration"]
            if duration.get("end"):
                name = task["task"]["name"]
                spent[name] = spent.get(name, 0.0) + unix(duration["end"]) - unix(duration["start"])
    ranked = sorted(spent.items(), key=lambda item: -item[1])[:count]
    return [[name, round(seconds, 2)] for name, seconds in ranked]
