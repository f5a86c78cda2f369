"""The test session's servers: the project's own stack script, on ports of their own."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
STACK_SCRIPT = ROOT / "stack" / "stack.sh"

TEST_STACK_ENV = {
    "EVENTFOLD_STACK_DIR": str(ROOT / ".stack" / "test"),
    "EVENTFOLD_KAFKA_PORT": os.environ.get("EVENTFOLD_TEST_KAFKA_PORT", "19092"),
    "EVENTFOLD_KAFKA_CONTROLLER_PORT": os.environ.get(
        "EVENTFOLD_TEST_KAFKA_CONTROLLER_PORT", "19093"
    ),
    "EVENTFOLD_KAFKA_SASL_PORT": os.environ.get("EVENTFOLD_TEST_KAFKA_SASL_PORT", "19094"),
    "EVENTFOLD_MONGO_PORT": os.environ.get("EVENTFOLD_TEST_MONGO_PORT", "17017"),
    "EVENTFOLD_FERRETDB_DEBUG_PORT": os.environ.get("EVENTFOLD_TEST_FERRETDB_DEBUG_PORT", "18088"),
    "EVENTFOLD_REDIS_PORT": os.environ.get("EVENTFOLD_TEST_REDIS_PORT", "16379"),
}


@dataclass(frozen=True)
class StackPorts:
    kafka_port: int
    mongo_port: int
    redis_port: int

    @classmethod
    def from_env(cls) -> StackPorts:
        return cls(
            int(TEST_STACK_ENV["EVENTFOLD_KAFKA_PORT"]),
            int(TEST_STACK_ENV["EVENTFOLD_MONGO_PORT"]),
            int(TEST_STACK_ENV["EVENTFOLD_REDIS_PORT"]),
        )


def stack(
    command: str, *args: str, extra_env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **TEST_STACK_ENV, **(extra_env or {})}
    return subprocess.run(
        [str(STACK_SCRIPT), command, *args],
        env=env,
        text=True,
        capture_output=True,
        check=check,
        timeout=600,
    )


def is_running() -> bool:
    status = stack("status").stdout
    return all(f"{name}: running" in status for name in ("redis", "ferretdb", "kafka"))
