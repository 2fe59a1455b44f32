"""Bounded waits for tests: every read of a child's output has a deadline (docs/testing.md).

A child that stops writing fails the test at once with what it was waiting for, instead
of leaving it to the per-test timeout (or blocking forever).
"""
from __future__ import annotations

import os
import signal
import threading
import time
from typing import IO, Iterator

# what a test waits for a line it expects soon (a child's "ready"), under TCG on a busy host
LINE_TIMEOUT = 60.0


def readline(stream: IO, timeout: float = LINE_TIMEOUT, what: str = "a line") -> str:
    """stream.readline(), or AssertionError after `timeout` s. The reading thread is left
    blocked on the stream: the caller kills the child, which ends it with EOF."""
    got: list = []
    t = threading.Thread(target=lambda: got.append(stream.readline()), daemon=True)
    t.start()
    t.join(timeout)
    if not got:
        raise AssertionError(f"waited {timeout:.0f} s for {what}: none came")
    return got[0]


def lines(stream: IO, timeout: float, what: str = "output") -> Iterator[str]:
    """The lines of `stream` until EOF, all within `timeout` s from now."""
    deadline = time.monotonic() + timeout
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            raise AssertionError(f"{what}: not finished within {timeout:.0f} s")
        line = readline(stream, left, what)
        if not line:
            return
        yield line


def hang_if_asked(where: str) -> None:
    """TOOLKIT_TEST_HANG=1 makes the test that calls this hang in a blocking read: the
    per-test timeout fails it with its stack and the run goes on. TOOLKIT_TEST_HANG=hard
    hangs with SIGALRM blocked, as code stuck in C would: the backstop in conftest.py then
    dumps every stack and ends pytest (the per-test log keeps what finished)."""
    mode = os.environ.get("TOOLKIT_TEST_HANG", "")
    if mode in ("", "0"):
        return
    print(f"TOOLKIT_TEST_HANG={mode}: {where} hangs on purpose", flush=True)
    if mode == "hard":
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGALRM})
        while True:
            time.sleep(3600)
    r, w = os.pipe()
    try:
        os.read(r, 1)   # nobody ever writes
    finally:
        os.close(r)
        os.close(w)


class Waiting:
    """A helper child (tests/kernel/tk_quota.c) started and stopped at its "ready N"
    line: go() lets it act, finish() -> (returncode, its output), kill() if it still
    runs; every wait bounded."""

    def __init__(self, *argv: str):
        import subprocess
        self.p = subprocess.Popen(list(argv), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                  text=True)
        line = readline(self.p.stdout, what=f"{os.path.basename(argv[0])}'s ready").split()
        assert line[0] == "ready", line
        self.ready = int(line[1])

    def go(self) -> None:
        self.p.stdin.write("go\n")
        self.p.stdin.flush()

    def finish(self, timeout: float = 60) -> tuple[int, str]:
        out, _ = self.p.communicate(timeout=timeout)
        return self.p.returncode, out

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
        self.p.communicate(timeout=30)
