"""CPU seconds each process of a benchmark phase used: who was busy while a figure was
measured.

A ratio of wall times says how fast a path is; the CPU each process spent says what
it cost, and where: the processor, the projection worker, FerretDB, Kafka, Redis or the
benchmark itself (the naive sinks and the rebuild run in it). On a shared 2-core machine
wall times swing by a factor of two within minutes, while CPU seconds per event move
far less, so they are what an A/B of a change to the hot path compares first.

Processes are told apart by their command lines: the servers by the benchmark stack's
ports, the processors by their module names."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Ports:
    """What tells the benchmark stack's servers from any others on the machine."""

    kafka: int
    mongo: int
    redis: int


def role(cmdline: str, pid: int, ports: Ports) -> str | None:
    """The part a process plays in the benchmark, or None for an unrelated one."""
    if pid == os.getpid():
        return "bench"
    if "stream_processors.projection_worker" in cmdline:
        return "projection_worker"
    if "stream_processors.worker" in cmdline:
        return "processor"
    if "ferretdb" in cmdline and f"127.0.0.1:{ports.mongo}" in cmdline:
        return "ferretdb"
    if "redis-server" in cmdline and f":{ports.redis}" in cmdline:
        return "redis"
    if "java" in cmdline and "kafka" in cmdline and ".stack/bench" in cmdline:
        return "kafka"
    return None


Snapshot = Mapping[int, tuple[str, float]]  # pid -> (role, CPU seconds so far)


def snapshot(ports: Ports) -> Snapshot:
    """The CPU seconds (user and system) every benchmark process has used so far."""
    found: dict[int, tuple[str, float]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            stat = (entry / "stat").read_text()
        except OSError:  # gone meanwhile
            continue
        name = role(cmdline, int(entry.name), ports)
        if name is None:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        found[int(entry.name)] = (name, (int(fields[11]) + int(fields[12])) / _TICKS)
    return found


def used(before: Snapshot, after: Snapshot) -> dict[str, float]:
    """CPU seconds per role between two snapshots (a process started in between counts
    from its start), largest first."""
    per_role: dict[str, float] = {}
    for pid, (name, seconds) in after.items():
        earlier = before.get(pid)
        spent = seconds - (earlier[1] if earlier is not None and earlier[0] == name else 0.0)
        per_role[name] = per_role.get(name, 0.0) + spent
    return {
        name: round(seconds, 2)
        for name, seconds in sorted(per_role.items(), key=lambda kv: -kv[1])
        if seconds > 0
    }


def summary(spent: Mapping[str, float], wall_s: float, events: int) -> str:
    """One line: each role's CPU seconds, the total in cores, and CPU µs per event."""
    total = sum(spent.values())
    parts = ", ".join(f"{name} {seconds:.2f}" for name, seconds in spent.items())
    cores = total / wall_s if wall_s > 0 else 0.0
    per_event = 1e6 * total / max(1, events)
    return f"cpu s: {parts}; {total:.1f} s in all ({cores:.2f} cores), {per_event:.0f} us/event"
