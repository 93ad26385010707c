"""The benchmarks' figure: the rolling restart over time (requests/s and
latency, each host's restart window shaded), serving throughput of the
three set-ups, and the worker-count policies."""

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

COLOURS = ["#4c72b0", "#dd8452", "#55a868", "#c44e52"]


def plot(results, path):
    # Two rows for the single-cluster phases, one for the fleet: only the
    # rows a run has figures for.
    others = any(results.get(key) for key in ("rolling", "serving", "workers"))
    fleet = results.get("fleet")
    rows = 2 * others + bool(fleet)
    figure, axes = plt.subplots(rows, 2, figsize=(13, 4.2 * rows + 0.5), squeeze=False)
    figure.suptitle(f"asgi-provisioner benchmarks, {results['started']} "
                    f"({results['cpus']} cores, {results['distro']})", fontsize=12)
    if others:
        rolling_panels(results.get("rolling"), axes[0][0], axes[1][0])
        serving_panel(results.get("serving"), axes[0][1])
        workers_panel(results.get("workers"), axes[1][1])
    if fleet:
        fleet_panels(fleet, axes[rows - 1][0], axes[rows - 1][1])
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)


def rolling_panels(roll, rate_axis, latency_axis):
    if not roll:
        rate_axis.set_visible(False)
        latency_axis.set_visible(False)
        return
    series = roll["series"][:-1]  # the last second is cut short by the stop
    t0 = series[0]["t"]
    times = [point["t"] - t0 for point in series]
    rate_axis.plot(times, [p["requests"] for p in series], color=COLOURS[0], label="requests/s")
    failed = [p["failed"] for p in series]
    rate_axis.plot(times, failed, color=COLOURS[3], label=f"failed/s (total {roll['failed']})")
    latency_axis.plot(times, [p["p50_ms"] for p in series], color=COLOURS[0], label="p50")
    latency_axis.plot(times, [p["p99_ms"] for p in series], color=COLOURS[1], label="p99")
    for axis in (rate_axis, latency_axis):
        for index, (host, (start, end)) in enumerate(sorted(roll["windows"].items(), key=lambda item: item[1][0])):
            axis.axvspan(start - t0, end - t0, color=COLOURS[index % 3 + 1], alpha=0.15,
                         label=f"{host.rsplit('-', 1)[-1]} restarting" if axis is rate_axis else None)
        axis.set_xlabel("seconds")
        axis.grid(alpha=0.3)
    rate_axis.set_title(f"Rolling restart under load: {roll['requests']} requests, {roll['failed']} failed")
    rate_axis.set_ylabel("requests per second")
    rate_axis.set_ylim(bottom=0)
    rate_axis.legend(loc="lower left", fontsize=8)
    latency_axis.set_title("Latency during the rolling restart (per second)")
    latency_axis.set_ylabel("ms")
    latency_axis.set_ylim(bottom=0)
    latency_axis.legend(loc="upper left", fontsize=8)


def serving_panel(serve, axis):
    if not serve:
        axis.set_visible(False)
        return
    labels = {"nginx_socket": "nginx -> socket\n(this project)", "direct": "gunicorn\ndirect (TCP)",
              "naive": "naive nginx -> TCP\nno keep-alive"}
    names = list(labels)
    values = [serve["configs"][name]["rps"] for name in names]
    bars = axis.bar([labels[name] for name in names], values, color=COLOURS[:3])
    for bar, name in zip(bars, names):
        config = serve["configs"][name]
        axis.annotate(f"{config['rps']:.0f}/s\np99 {config['p99_ms']} ms",
                      (bar.get_x() + bar.get_width() / 2, bar.get_height()),
                      ha="center", va="bottom", fontsize=8)
    axis.set_title(f"Serving (wrk -c{serve['connections']}, median of {serve['rounds']}): "
                   f"{serve['nginx_over_direct']}x direct, {serve['nginx_over_naive']}x naive")
    axis.set_ylabel("requests per second")
    axis.set_ylim(0, max(values) * 1.25)
    axis.grid(axis="y", alpha=0.3)


def workers_panel(work, axis):
    if not work:
        axis.set_visible(False)
        return
    counts = sorted(int(count) for count in work["by_count"])
    rates = [work["by_count"][str(count)]["rps"] for count in counts]
    memory = [work["by_count"][str(count)]["total_pss_mib"] for count in counts]
    axis.bar([str(count) for count in counts], rates, color=COLOURS[0], label="requests/s")
    axis.set_xlabel("workers (" + "; ".join(f"{label}: {count}" for label, count in work["policies"].items()) + ")",
                    fontsize=8)
    axis.set_ylabel("requests per second")
    axis.set_title(f"Worker count on {work['cores']} cores: throughput and memory")
    twin = axis.twinx()
    twin.plot([str(count) for count in counts], memory, color=COLOURS[3], marker="o", label="PSS, MiB (all processes)")
    twin.set_ylabel("MiB")
    twin.set_ylim(bottom=0)
    axis.legend(loc="upper left", fontsize=8)
    twin.legend(loc="upper right", fontsize=8)
    axis.grid(axis="y", alpha=0.3)


def fleet_panels(fleet, time_axis, turn_axis):
    """Wall time of each playbook against the number of app servers, and
    each size's host turns in the rolling restart, split into their parts."""
    if not fleet:
        time_axis.set_visible(False)
        turn_axis.set_visible(False)
        return
    sizes = sorted(int(size) for size in fleet)
    rows = [fleet[str(size)] for size in sizes]
    lines = {"site.yml, fresh": "site_s", "site.yml, no-op": "noop_s", "no-op, Mitogen": "noop_mitogen_s",
             "deploy, index": "deploy_index_s", "deploy, wheelhouse": "deploy_wheelhouse_s",
             "rolling restart": "rolling_s", "Ansible's floor for the no-op's tasks": "floor_s"}
    for index, (label, key) in enumerate(lines.items()):
        if all(row.get(key) is None for row in rows):
            continue
        time_axis.plot(sizes, [row.get(key) for row in rows], marker="o", label=label,
                       color=(COLOURS + ["#8172b3", "#937860", "#555555"])[index % 7],
                       linestyle=":" if key == "floor_s" else "-")
    time_axis.set_xticks(sizes)
    time_axis.set_xlabel("app servers behind one load balancer")
    time_axis.set_ylabel("seconds (wall)")
    time_axis.set_ylim(bottom=0)
    time_axis.set_title("Time against host count")
    time_axis.legend(fontsize=8)
    time_axis.grid(alpha=0.3)
    parts = ["drain", "switch", "restart", "health", "undrain", "overhead"]
    bottoms = [0.0] * len(sizes)
    longest = [row["rolling_turns"].get("longest_parts", {}) for row in rows]
    for index, part in enumerate(parts):
        values = [turn.get(part, 0.0) for turn in longest]
        turn_axis.bar([str(size) for size in sizes], values, bottom=bottoms, label=part,
                      color=(COLOURS + ["#8172b3", "#937860"])[index])
        bottoms = [b + v for b, v in zip(bottoms, values)]
    medians = [row["rolling_turns"].get("median_s", 0) for row in rows]
    turn_axis.plot([str(size) for size in sizes], medians, color="black", marker="x", linestyle="none",
                   label="median turn")
    turn_axis.set_xlabel("app servers")
    turn_axis.set_ylabel("seconds")
    turn_axis.set_title("Longest host turn in the rolling restart, by part")
    turn_axis.legend(fontsize=8)
    turn_axis.grid(axis="y", alpha=0.3)
