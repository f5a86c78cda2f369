"""Running the processor as a real worker process for end-to-end tests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from eventfold.settings import Settings
from tests.support.stack import ROOT


class ProcessorProcess:
    """One ``faust worker`` with the given settings; its log goes to a file."""

    def __init__(self, settings: Settings, env: dict[str, str], log_path: Path) -> None:
        self.settings = settings
        self.log_path = log_path
        self._env = {
            **os.environ,
            **env,
            # one data dir per worker, as on separate hosts (RocksDB locks its files)
            "EVENTFOLD_PROCESSOR_DATA_DIR": str(log_path.parent / f"{log_path.stem}-data"),
        }
        self.proc: subprocess.Popen[bytes] | None = None
        self._run_starts_at = 0

    def start(self, timeout: float = 60.0) -> None:
        """Start the worker (again, on the same data dir, after a stop) and wait until it
        is ready; its log is appended to, and waits look at this run's part only."""
        self._log = self.log_path.open("ab")
        self._run_starts_at = self._log.tell()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "stream_processors.worker", "-l", "info"],
            cwd=ROOT,
            env=self._env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.wait_for_log("Worker]: Ready", timeout)

    def wait_for_log(self, text: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while text not in self.run_log():
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise RuntimeError(f"processor exited:\n{self.log_tail()}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"processor not ready in {timeout}s:\n{self.log_tail()}")
            time.sleep(0.1)

    def run_log(self) -> str:
        """The log of the current (or last) run."""
        with self.log_path.open("rb") as log:
            log.seek(self._run_starts_at)
            return log.read().decode(errors="replace")

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


class Workers:
    """The processor processes of one deployment; all stopped at the end of the test."""

    def __init__(self, settings: Settings, env: dict[str, str], log_dir: Path) -> None:
        self._settings = settings
        self._env = env
        self._log_dir = log_dir
        self.started: list[ProcessorProcess] = []

    def start(self) -> ProcessorProcess:
        worker = ProcessorProcess(
            self._settings, self._env, self._log_dir / f"worker-{len(self.started)}.log"
        )
        worker.start()
        self.started.append(worker)
        return worker

    def stop_all(self) -> None:
        for worker in self.started:
            worker.stop()
