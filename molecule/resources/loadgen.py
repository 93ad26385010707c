#!/usr/bin/env python3
"""A bounded HTTP load generator for the tests (stdlib only).

Runs CONCURRENCY keep-alive clients against one URL until DURATION seconds
or MAX_REQUESTS requests, or until STOP_FILE exists, whichever comes
first (never past HARD_MAX_SECONDS), then prints a JSON
summary: requests, ok, failed, the statuses and errors seen, and which
versions, releases, hosts and worker pids answered (from the sample app's JSON).
A failed request whose answer had begun (status line received, body cut
short) is also counted as `truncated`: what a killed server process was
writing when it died, which no proxy can retry.
With --timeline FILE it also writes every request's start (seconds after
`t0`, a Unix time), latency (ms) and outcome, for the benchmarks' plots.
"""

import argparse
import collections
import http.client
import json
import os
import threading
import time
import urllib.parse

HARD_MAX_SECONDS = 300
HARD_MAX_REQUESTS = 1_000_000


# A keep-alive connection the server closes while a request is being sent
# (nginx's old workers close idle ones on reload) fails this way before any
# answer. Like browsers and HTTP libraries (RFC 9112, 9.3.1), the client
# sends its idempotent GET again once on a new connection; such retries
# are counted apart, and the request fails if the new connection fails too.
STALE_CONNECTION = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError)


class Truncated(Exception):
    """The answer began (status line and headers) and then broke off."""


def fetch(args, url, conn):
    if conn is None:
        conn = http.client.HTTPConnection(url.hostname, url.port or 80, timeout=args.timeout)
    conn.request("GET", url.path or "/", headers={"Host": args.host or url.netloc})
    response = conn.getresponse()
    try:
        body = response.read()
    except (OSError, http.client.HTTPException) as exc:
        raise Truncated(f"{response.status} then {type(exc).__name__}") from exc
    if response.getheader("connection", "").lower() == "close":
        conn.close()
        conn = None
    return conn, response.status, body


def client(args, deadline, budget, lock, stats, timeline):
    url = urllib.parse.urlsplit(args.url)
    conn = None
    while time.monotonic() < deadline and not stats["stopped"]:
        with lock:
            if budget[0] <= 0:
                return
            budget[0] -= 1
        began = time.monotonic()
        try:
            try:
                conn, status, body = fetch(args, url, conn)
            except STALE_CONNECTION:
                if conn is None:
                    raise
                conn.close()
                conn = None
                with lock:
                    stats["retried_stale_connections"] += 1
                conn, status, body = fetch(args, url, conn)
        except (OSError, http.client.HTTPException, Truncated) as exc:
            if conn is not None:
                conn.close()
            conn = None
            with lock:
                stats["failed"] += 1
                stats["errors"][type(exc).__name__] += 1
                stats["truncated"] += isinstance(exc, Truncated)
            if timeline is not None:
                timeline.append((began, time.monotonic() - began, 0))
            time.sleep(0.01)
            continue
        if timeline is not None:
            timeline.append((began, time.monotonic() - began, int(200 <= status < 300)))
        answer = {}
        try:
            answer = json.loads(body)
        except ValueError:
            pass
        with lock:
            stats["statuses"][str(status)] += 1
            if 200 <= status < 300:
                stats["ok"] += 1
            else:
                stats["failed"] += 1
            for key in ("version", "release", "host", "pid"):
                if isinstance(answer, dict) and key in answer:
                    stats[key + "s"][str(answer[key])] += 1
        if args.pause:
            time.sleep(args.pause)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--url", default="http://127.0.0.1/")
    parser.add_argument("--host", default="", help="Host header (default: from the URL)")
    parser.add_argument("--duration", type=float, default=5.0)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--max-requests", type=int, default=50_000)
    parser.add_argument("--timeout", type=float, default=30.0)
    parser.add_argument("--pause", type=float, default=0.0, help="seconds between a client's requests")
    parser.add_argument("--stop-file", default="", help="stop early once this file exists")
    parser.add_argument("--timeline", default="", help="write every request's start, latency and outcome here")
    args = parser.parse_args()

    duration = min(args.duration, HARD_MAX_SECONDS)
    budget = [min(args.max_requests, HARD_MAX_REQUESTS)]
    stats = {
        "ok": 0,
        "failed": 0,
        "statuses": collections.Counter(),
        "errors": collections.Counter(),
        "versions": collections.Counter(),
        "releases": collections.Counter(),
        "hosts": collections.Counter(),
        "pids": collections.Counter(),
        "stopped": "",
        "retried_stale_connections": 0,
        "truncated": 0,
    }
    lock = threading.Lock()
    # list.append is atomic: the clients share one list without the lock.
    timeline = [] if args.timeline else None
    wall_start = time.time()
    started = time.monotonic()
    deadline = started + duration
    threads = [
        threading.Thread(target=client, args=(args, deadline, budget, lock, stats, timeline), daemon=True)
        for _ in range(max(1, args.concurrency))
    ]
    for thread in threads:
        thread.start()
    while args.stop_file and time.monotonic() < deadline and any(t.is_alive() for t in threads):
        if os.path.exists(args.stop_file):
            stats["stopped"] = "stop-file"
            break
        time.sleep(0.1)
    for thread in threads:
        thread.join(duration + args.timeout + 5)
    stats["stopped"] = stats["stopped"] or "deadline"
    stats["requests"] = stats["ok"] + stats["failed"]
    stats["seconds"] = round(time.monotonic() - started, 2)
    if timeline is not None:
        records = sorted((round(t - started, 4), round(latency * 1000, 2), ok) for t, latency, ok in timeline)
        with open(args.timeline, "w", encoding="utf-8") as out:
            json.dump({"t0": wall_start, "columns": ["start_s", "latency_ms", "ok"], "records": records}, out)
    print(json.dumps(stats, sort_keys=True))


if __name__ == "__main__":
    main()
