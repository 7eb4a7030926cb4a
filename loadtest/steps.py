"""A Locust load shape that raises users step by step until a step fails (the capacity search).

    locust -f loadtest/locustfile.py,loadtest/steps.py --headless -H http://127.0.0.1:8000 \\
        --tokens-file var/loadtest/tokens.json --steps 250,500,1000,2000 --step-time 60 \\
        --step-report var/loadtest/steps.json

Only active when this file is given to Locust beside the locustfile. For each
step: spawn up to the step's user count (``--step-spawn-rate`` users/s; the
users of earlier steps stay connected), let the spawn burst settle
(``--step-settle`` s), reset Locust's stats, measure for ``--step-time`` s, and
judge the window (loadtest/capacity.py): error rate, HTTP and WebSocket
delivery p99, and, with ``--step-server-pids``, the server processes' CPU
(exact CPU time from the kernel over the window). A step that failed on
latency alone is measured again up to ``--step-confirm`` times (a shared
machine has noisy moments); the first step that fails ends the run.

After every step the report (``--step-report``) is rewritten: each window's
judgement, CPU, the servers' cache hit rate (``--step-cache-stats``: the
servers must run ``loadtest.stats_asgi``) and Locust's raw stats entries.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import asdict
from typing import Any

import orjson
import psutil
from locust import LoadTestShape, events

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from capacity import Limits, cache_stats, judge, latency_only, summarize  # noqa: E402

RAMP_GRACE_S = 60.0  # beyond the planned spawn time, before a ramp counts as stuck


@events.init_command_line_parser.add_listener
def _add_arguments(parser: Any) -> None:
    group = parser.add_argument_group("capacity steps (loadtest/steps.py)")
    group.add_argument("--steps", default="250,500,1000,2000,3000,5000", help="user counts, comma-separated")
    group.add_argument("--step-time", type=float, default=60.0, help="seconds measured per step")
    group.add_argument("--step-settle", type=float, default=10.0, help="seconds between a ramp and its measurement")
    group.add_argument("--step-spawn-rate", type=float, default=50.0, help="users started per second")
    group.add_argument("--step-confirm", type=int, default=1, help="re-measurements of a step that failed on latency alone")
    group.add_argument("--step-error-limit", type=float, default=Limits.error_limit_pct, help="percent")
    group.add_argument("--step-p99-limit", type=float, default=Limits.p99_limit_ms, help="ms")
    group.add_argument("--step-cpu-limit", type=float, default=Limits.cpu_limit_pct, help="percent of all cores")
    group.add_argument("--step-server-pids", default="", help="server process ids, comma-separated (CPU judgement)")
    group.add_argument("--step-cache-stats", action="store_true", help="read the servers' cache counters per step")
    group.add_argument("--step-report", default="", help="write the steps here as JSON (rewritten after each step)")


class _CpuClock:
    """CPU seconds of processes and of the machine, read exactly from the kernel at two instants."""

    def __init__(self, server_pids: list[int]) -> None:
        self.servers = [psutil.Process(pid) for pid in server_pids]

    @staticmethod
    def _seconds(procs: list[psutil.Process]) -> float:
        total = 0.0
        for p in procs:
            try:
                t = p.cpu_times()
                total += t.user + t.system
            except psutil.Error:
                pass
        return total

    def read(self) -> dict[str, float]:
        me = psutil.Process()
        try:
            generator = [me, *me.children(recursive=True)]
        except psutil.Error:
            generator = [me]
        machine = psutil.cpu_times()
        return {
            "t": time.monotonic(),
            "server": self._seconds(self.servers),
            "generator": self._seconds(generator),
            "busy": sum(machine) - machine.idle - getattr(machine, "iowait", 0.0),
            "all": sum(machine),
        }

    @staticmethod
    def between(a: dict[str, float], b: dict[str, float]) -> dict[str, float | None]:
        wall = b["t"] - a["t"]
        if wall <= 0:
            return {"server_cpu_pct": None, "generator_cpu_pct": None, "system_cpu_pct": None}
        machine = b["all"] - a["all"]
        return {
            "server_cpu_pct": round(100 * (b["server"] - a["server"]) / wall, 1),
            "generator_cpu_pct": round(100 * (b["generator"] - a["generator"]) / wall, 1),
            "system_cpu_pct": round(100 * (b["busy"] - a["busy"]) / machine, 1) if machine > 0 else None,
        }


class CapacitySteps(LoadTestShape):
    """Steps of users; see the module docstring."""

    def __init__(self) -> None:
        super().__init__()
        self.ready = False

    def _setup(self) -> None:
        options = self.runner.environment.parsed_options
        self.steps = sorted({int(x) for x in str(options.steps).split(",") if x.strip()})
        if not self.steps or self.steps[0] < 1:
            raise ValueError("--steps must list positive user counts")
        self.step_time = float(options.step_time)
        self.settle = float(options.step_settle)
        self.rate = float(options.step_spawn_rate)
        self.confirm = int(options.step_confirm)
        self.limits = Limits(float(options.step_error_limit), float(options.step_p99_limit), float(options.step_cpu_limit))
        self.cpu = _CpuClock([int(p) for p in str(options.step_server_pids).split(",") if p.strip()])
        self.judge_cpu = bool(self.cpu.servers)
        hosts = [h.strip().rstrip("/") for h in (getattr(options, "hosts", "") or "").split(",") if h.strip()]
        self.stats_hosts = (hosts or [self.runner.environment.host.rstrip("/")]) if options.step_cache_stats else []
        self.report_path = options.step_report
        self.report: dict[str, Any] = {
            "steps": [],
            "plan": {
                "steps": self.steps,
                "step_time_s": self.step_time,
                "settle_s": self.settle,
                "spawn_rate": self.rate,
                "think_time_s": getattr(options, "think_time", None),
                "limits": asdict(self.limits),
            },
        }
        self.index = 0
        self.attempt = 1
        self.phase = "ramp"
        self.phase_started = time.monotonic()
        self.previous = 0
        self.ready = True

    # -- the state machine, one tick a second ----------------------------------------------

    def tick(self) -> tuple[int, float] | None:
        if not self.ready:
            self._setup()
        now = time.monotonic()
        target = self.steps[self.index]
        if self.phase == "ramp":
            planned = (target - self.previous) / max(self.rate, 0.001)
            if self.get_current_user_count() >= target or now - self.phase_started > planned + RAMP_GRACE_S:
                self.phase, self.phase_started = "settle", now
            return target, self.rate
        if self.phase == "settle":
            if now - self.phase_started >= self.settle:
                self._begin_window()
                self.phase = "measure"
            return target, self.rate
        if now - self.window_clock["t"] < self.step_time:
            return target, self.rate
        step = self._end_window(target)
        if not step["held"]:
            if latency_only(step["reasons"]) and self.attempt <= self.confirm:
                self.attempt += 1
                self._begin_window()
                return target, self.rate
            return self._finish(failed=step)
        self.index += 1
        self.attempt = 1
        if self.index == len(self.steps):
            return self._finish(failed=None)
        self.previous = target
        self.phase, self.phase_started = "ramp", now
        return self.steps[self.index], self.rate

    def _begin_window(self) -> None:
        self.runner.stats.reset_all()
        if self.stats_hosts:
            cache_stats(self.stats_hosts, reset=True)
        self.window_started_at = time.time()
        self.window_clock = self.cpu.read()

    def _end_window(self, target: int) -> dict[str, Any]:
        clock = self.cpu.read()
        stats = self.runner.stats
        entries = stats.serialize_stats()
        errors = list(stats.serialize_errors().values())
        summary = summarize(entries)
        cpu = _CpuClock.between(self.window_clock, clock)
        cores = os.cpu_count() or 1
        reasons = judge(summary, server_cpu_pct=cpu["server_cpu_pct"] if self.judge_cpu else None, cores=cores, limits=self.limits)
        running = self.get_current_user_count()
        if running < target:  # users that could not spawn, or whose greenlet died, are not load
            reasons.append(f"only {running} of {target} users running")
        errors.sort(key=lambda e: -int(e.get("occurrences") or 0))
        step = {
            "users": target,
            "users_running": running,
            "attempt": self.attempt,
            "window": [round(self.window_started_at, 3), round(time.time(), 3)],
            "duration_s": round(clock["t"] - self.window_clock["t"], 1),
            **{k: v for k, v in summary.items()},
            **cpu,
            "cache": cache_stats(self.stats_hosts) if self.stats_hosts else None,
            "top_failures": [
                {"type": e.get("method"), "name": e.get("name"), "error": e.get("error"), "count": e.get("occurrences")}
                for e in errors[:5]
            ],
            "reasons": reasons,
            "held": not reasons,
            "stats": entries,
        }
        self.report["steps"].append(step)
        self._write()
        return step

    def _finish(self, *, failed: dict[str, Any] | None) -> None:
        held = [s for s in self.report["steps"] if s["held"]]
        self.report["capacity"] = max((s["users"] for s in held), default=0)
        self.report["first_failing"] = failed["users"] if failed else None
        self.report["limit"] = failed["reasons"] if failed else ["every step held: add larger steps to find the limit"]
        self.report["finished"] = True
        self._write()
        return None

    def _write(self) -> None:
        if self.report_path:
            with open(self.report_path, "wb") as f:
                f.write(orjson.dumps(self.report, option=orjson.OPT_NON_STR_KEYS))
