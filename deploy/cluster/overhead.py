"""CPU per request and per delivery: the Locust mix against one app node, then against both behind HAProxy.

    make cluster
    .venv/bin/python deploy/cluster/overhead.py --users 300 --seconds 60
    make cluster-stop

On one machine this shows the cluster's overhead and correctness, not its
capacity: both nodes share the same cores. Each run loads the running
cluster of `make cluster` with loadtest/locustfile.py (its users hold a
WebSocket each), once at node1's own port, once at HAProxy's, and measures the
CPU time (user + system, from the kernel) that the app servers, their
workers, HAProxy, Redis and PostgreSQL spent in the run, divided by the
requests and the deliveries Locust counted. It seeds load users into the
cluster's database first (bench.seed, bench.make_tokens).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import chatcluster  # noqa: E402

ROOT = chatcluster.ROOT


def processes(cluster: chatcluster.Cluster) -> dict[str, list[psutil.Process]]:
    """The cluster's processes by tier (PostgreSQL: the primary's postmaster and its backends)."""
    tiers: dict[str, list[psutil.Process]] = {"app servers": [], "workers": [], "haproxy": [], "redis": [], "postgres primary": []}
    for pidfile in (cluster.run_dir).glob("*.pid"):
        pid = cluster._recorded(pidfile.stem)
        if pid is None:
            continue
        name = pidfile.stem
        tier = (
            "workers" if name.endswith("-worker") else "app servers" if name.startswith("node")
            else "haproxy" if name == "haproxy" else "redis" if name.startswith(("redis", "sentinel")) else None
        )  # fmt: skip
        if tier:
            tiers[tier].append(psutil.Process(pid))
    postmaster = int((cluster.pg_dir("primary") / "postmaster.pid").read_text().split()[0])
    main = psutil.Process(postmaster)
    tiers["postgres primary"] = [main, *main.children()]
    return tiers


def cpu_seconds(procs: list[psutil.Process], seen: dict[int, float]) -> float:
    """CPU seconds these processes used since ``seen`` was filled (a backend that ended in between is lost)."""
    total = 0.0
    for proc in procs:
        try:
            times = proc.cpu_times()
        except psutil.Error:
            continue
        now = times.user + times.system
        total += now - seen.get(proc.pid, 0.0)
        seen[proc.pid] = now
    return total


def run(cluster: chatcluster.Cluster, host: str, args: argparse.Namespace, label: str) -> dict:
    out = cluster.root / f"overhead-{label}.json"
    tiers = processes(cluster)
    seen: dict[int, float] = {}
    for procs in tiers.values():
        cpu_seconds(procs, seen)
    started = time.monotonic()
    done = subprocess.run(
        [
            str(ROOT / ".venv" / "bin" / "locust"), "-f", "loadtest/locustfile.py", "--headless", "-H", host,
            "--tokens-file", str(cluster.root / "tokens.json"), "-u", str(args.users), "-r", str(args.spawn_rate),
            "-t", f"{args.seconds}s", "--only-summary", "--think-time", str(args.think_time), "--stats-file", str(out),
        ],
        cwd=ROOT, env=cluster.app_env(), capture_output=True, text=True, timeout=args.seconds + 300,
    )  # fmt: skip
    elapsed = time.monotonic() - started
    tiers = processes(cluster)  # PostgreSQL backends that started during the run count from zero
    used = {tier: cpu_seconds(procs, seen) for tier, procs in tiers.items()}
    if done.returncode not in (0, 1) or not out.exists():
        raise SystemExit(f"locust failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    stats = json.loads(out.read_text())
    entries = stats.get("entries", stats.get("stats", []))
    requests = sum(e["num_requests"] for e in entries if e.get("method") != "WS")
    failures = sum(e["num_failures"] for e in entries)
    deliveries = sum(e["num_requests"] for e in entries if e.get("method") == "WS" and e.get("name") in ("recv message.new", "deliver own"))
    result = {
        "target": label, "seconds": round(elapsed, 1), "users": args.users, "http_requests": requests,
        "deliveries": deliveries, "failures": failures,
        "cpu_s": {tier: round(seconds, 2) for tier, seconds in used.items()},
        "app_cpu_ms_per_request_and_delivery": round(1000 * used["app servers"] / max(1, requests + deliveries), 3),
        "total_cpu_ms_per_request_and_delivery": round(1000 * sum(used.values()) / max(1, requests + deliveries), 3),
        "haproxy_cpu_ms_per_request": round(1000 * used["haproxy"] / max(1, requests), 3),
    }  # fmt: skip
    print(json.dumps(result), flush=True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=os.environ.get("CLUSTER_DIR", str(ROOT / "var" / "cluster")))
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--spawn-rate", type=int, default=50)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--think-time", type=float, default=5.0, help="mean seconds between two actions of a user")
    args = parser.parse_args()
    root = Path(args.dir)
    ports = chatcluster.Ports(**json.loads((root / "ports.json").read_text()))
    cluster = chatcluster.Cluster(root, ports)
    env = cluster.app_env()
    for command in (
        ["-m", "bench.seed", "--users", str(args.users), "--projects", "2", "--rooms", "10", "--messages", "20000", "--no-progress"],
        ["-m", "bench.make_tokens", "--users", str(args.users), "--out", str(root / "tokens.json")],
    ):
        subprocess.run([chatcluster.PYTHON, *command], cwd=ROOT, env=env, check=True, timeout=600)
    results = [
        run(cluster, f"http://127.0.0.1:{ports.nodes[0]}", args, "one node"),
        run(cluster, cluster.url, args, "two nodes behind haproxy"),
    ]
    (root / "overhead.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
