"""``make run`` under its supervisor (issue 11.8): a process that dies is started again
and works, ``status`` tells it from supervisord, and Ctrl-C stops every process.

Before, one dead process made ``run`` stop the whole stack, and under ``make up`` it
stayed dead. Black-box: ``stack/stack.sh run`` in a folder and on ports of its own
(``.stack/run-test``, 19292 and up), signals, HTTP."""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import redis

from tests.support.stack import ROOT, STACK_SCRIPT, TEST_STACK_ENV, stack

STACK_DIR = ROOT / ".stack" / "run-test"
PORTS = {
    "EVENTFOLD_KAFKA_PORT": 19292,
    "EVENTFOLD_KAFKA_CONTROLLER_PORT": 19293,
    "EVENTFOLD_KAFKA_SASL_PORT": 19294,
    "EVENTFOLD_MONGO_PORT": 17217,
    "EVENTFOLD_FERRETDB_DEBUG_PORT": 18288,
    "EVENTFOLD_REDIS_PORT": 16579,
    "EVENTFOLD_PRODUCER_PORT": 18201,
    "EVENTFOLD_QUERY_PORT": 18202,
}
ENV = {
    "EVENTFOLD_STACK_DIR": str(STACK_DIR),
    "EVENTFOLD_AUTH_DISABLED": "true",
    "EVENTFOLD_REDIS_APPENDFSYNC": "always",  # not the default: the stack passes it on
    **{name: str(port) for name, port in PORTS.items()},
}
PRODUCER = f"http://127.0.0.1:{PORTS['EVENTFOLD_PRODUCER_PORT']}"
QUERY = f"http://127.0.0.1:{PORTS['EVENTFOLD_QUERY_PORT']}"
REDIS_PORT = PORTS["EVENTFOLD_REDIS_PORT"]
PROGRAMS = ("redis", "ferretdb", "kafka", "processor", "producer-api", "query-api")


def wait_for(what: str, check: Callable[[], bool], within_s: float) -> None:
    deadline = time.monotonic() + within_s
    while not check():
        assert time.monotonic() < deadline, f"not {what} after {within_s}s"
        time.sleep(0.1)


def pid_of(name: str) -> int | None:
    try:
        return int((STACK_DIR / "run" / f"{name}.pid").read_text())
    except (FileNotFoundError, ValueError):
        return None


def alive(pid: int | None) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[1][0] not in "ZX"
    except (FileNotFoundError, IndexError):
        return False


@pytest.fixture
def running_stack(tmp_path: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``stack.sh run`` in the foreground, in a session of its own (as a terminal's
    process group); its output in a file."""
    shutil.rmtree(STACK_DIR, ignore_errors=True)
    output = tmp_path / "run.out"
    with output.open("wb") as out:
        run = subprocess.Popen(
            [str(STACK_SCRIPT), "run"],
            env={**os.environ, **TEST_STACK_ENV, **ENV},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:

        def ready() -> bool:
            assert run.poll() is None, output.read_text()
            return "running in the foreground" in output.read_text()

        wait_for("ready", ready, 240)
        yield run
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGINT)
            try:
                run.wait(120)
            except subprocess.TimeoutExpired:
                os.killpg(run.pid, signal.SIGKILL)
        stack("down", extra_env=ENV, check=False)


def processes_naming(folder: Path) -> list[str]:
    """The command lines of live processes that name ``folder``."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except (OSError, ValueError):
            continue
        if str(folder) in cmdline and alive(int(proc.name)):
            found.append(cmdline)
    return found


def restarted(name: str, old_pid: int | None) -> bool:
    pid = pid_of(name)
    return pid != old_pid and alive(pid)


def redis_answers() -> bool:
    with contextlib.suppress(redis.RedisError), redis.Redis(port=REDIS_PORT) as client:
        return bool(client.ping())
    return False


def healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def publish_and_read(n: int) -> None:
    """An order published and read back through the processor with its consistency
    token: every part of the stack works."""
    order = {
        "type": "OrderPlaced",
        "data": {
            "order_id": f"o-{n}",
            "customer_id": "c-1",
            "currency": "EUR",
            "items": [{"sku": "A-1", "quantity": n, "unit_price": "2.50"}],
        },
    }
    posted = httpx.post(f"{PRODUCER}/v1/events", json=order, timeout=30)
    assert posted.status_code == 202, posted.text
    token = posted.json()["consistency_token"]
    # A restarted processor takes its partitions back once the group dropped the
    # killed member (its session timeout, 10 s) and its tables are restored: until
    # then the token's wait answers 409 "retry later".
    deadline = time.monotonic() + 120
    while True:
        read = httpx.get(
            f"{QUERY}/v1/orders/o-{n}", headers={"X-Consistency-Token": token}, timeout=60
        )
        if read.status_code not in (409, 503) or time.monotonic() > deadline:
            break
        if read.status_code == 409:
            assert "not applied the consistency token yet" in read.text, read.text
    assert read.status_code == 200, read.text
    assert read.json()["total"] == f"{2.5 * n:.2f}"


@pytest.mark.timeout(600)
def test_run_restarts_what_dies_and_ctrl_c_stops_everything(
    running_stack: subprocess.Popen[bytes],
) -> None:
    publish_and_read(1)
    with redis.Redis(port=REDIS_PORT, decode_responses=True) as client:
        assert client.config_get("appendfsync") == {"appendfsync": "always"}  # issue 11.9
    pids = {name: pid_of(name) for name in PROGRAMS}
    assert all(alive(pid) for pid in pids.values()), pids

    # The processor, the query API and a server die without a goodbye, one after another.
    for n, name in enumerate(("processor", "query-api", "redis"), start=2):
        os.kill(pids[name] or 0, signal.SIGKILL)
        wait_for(f"{name} restarted", lambda n=name: restarted(n, pids[n]), 60)
        status = stack("status", extra_env=ENV).stdout
        assert f"{name}: running (pid {pid_of(name)}" in status, status
        assert running_stack.poll() is None  # run went on
        if name == "query-api":
            wait_for("the query API answering", lambda: healthy(QUERY), 60)
        if name == "redis":
            wait_for("Redis answering", redis_answers, 60)
        publish_and_read(n)  # (waits for the restarted processor to be consuming)

    # Ctrl-C: every process stopped, supervisord too, and run exits 0.
    now = {name: pid_of(name) for name in (*PROGRAMS, "supervisord")}
    os.killpg(running_stack.pid, signal.SIGINT)
    assert running_stack.wait(120) == 0
    assert not any(alive(pid) for pid in now.values()), now
    assert processes_naming(STACK_DIR) == []  # nothing else of it either
    assert "processor: stopped" in stack("status", extra_env=ENV).stdout
