"""A small, reusable lifecycle workload with a ground-truth ledger (sized for TCG).

``run()`` forks ``n`` children of each kind, one at a time, and waits for each:
  exit     exits with a distinct code (10 + i)
  exec     execs /bin/true (comm becomes "true"), status 0
  threads  starts ``threads`` threads (each records its tid), joins them, exits 40 + i
  signal   kills itself with SIGKILL / SIGTERM / SIGSEGV in turn (no core dump)
  mem      touches ``mem_mib`` MiB, reports its own VmHWM, exits 60 + i
The ledger has, per child: pid, kind, wait status (what the kernel calls exit_code),
the comm at fork and at exit, thread ids, VmHWM KiB, start time in clock ticks.

Run as a script it prints the ledger as JSON; ``run_as(uid, ...)`` runs it that way
under another uid, so a uid filter selects exactly the workload's own events.
"""
from __future__ import annotations

import json
from collections import Counter
import mmap
import os
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

KINDS = ("exit", "exec", "threads", "signal", "mem")
SIGNALS = (signal.SIGKILL, signal.SIGTERM, signal.SIGSEGV)
EXEC_PATH = "/bin/true"
HELPER_SRC = Path(__file__).with_name("tk_helper.c")


def _self_comm() -> str:
    return Path("/proc/self/comm").read_text().rstrip("\n")


def _start_ticks() -> int:
    stat = Path("/proc/self/stat").read_text()
    return int(stat[stat.rindex(")") + 2:].split()[19])


def _vmhwm_kib() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return -1


def _child(kind: str, i: int, threads: int, mem_mib: int, w: int) -> None:
    """In the forked child: never returns."""
    try:
        info = {"start_ticks": _start_ticks()}
        if kind == "exit":
            code = 10 + i
        elif kind == "exec":
            os.write(w, json.dumps(info).encode())
            os.close(w)
            os.execv(EXEC_PATH, [EXEC_PATH])
        elif kind == "threads":
            tids, lock = [], threading.Lock()

            def body():
                with lock:
                    tids.append(threading.get_native_id())
                time.sleep(0.02)
            ts = [threading.Thread(target=body) for _ in range(threads)]
            for t in ts:
                t.start()
            for t in ts:
                t.join()
            info["tids"] = tids
            code = 40 + i
        elif kind == "signal":
            sig = SIGNALS[i % len(SIGNALS)]
            resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
            signal.signal(sig, signal.SIG_DFL) if sig != signal.SIGKILL else None
            os.write(w, json.dumps(info).encode())
            os.close(w)
            os.kill(os.getpid(), sig)
            time.sleep(10)
            code = 99
        elif kind == "mem":
            size = mem_mib << 20
            buf = mmap.mmap(-1, size)
            for off in range(0, size, mmap.PAGESIZE):
                buf[off] = 1
            info["vmhwm_kib"] = _vmhwm_kib()
            code = 60 + i
        else:
            code = 98
        os.write(w, json.dumps(info).encode())
        os.close(w)
        os._exit(code)
    except BaseException:
        os._exit(97)


def run(n: int = 5, threads: int = 3, mem_mib: int = 32, kinds=KINDS) -> dict:
    """Fork the children (sequentially) and return the ledger."""
    parent_comm = _self_comm()
    t0 = time.monotonic_ns()
    children = []
    for kind in kinds:
        for i in range(n):
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:
                os.close(r)
                _child(kind, i, threads, mem_mib, w)
            os.close(w)
            with os.fdopen(r, "rb") as f:
                raw = f.read()
            _, status = os.waitpid(pid, 0)
            info = json.loads(raw) if raw else {}
            children.append({
                "pid": pid, "kind": kind, "index": i, "status": status,
                "fork_comm": parent_comm,
                "exit_comm": os.path.basename(EXEC_PATH) if kind == "exec" else parent_comm,
                "tids": info.get("tids", []),
                "vmhwm_kib": info.get("vmhwm_kib"),
                "start_ticks": info.get("start_ticks"),
            })
    return {"pid": os.getpid(), "uid": os.getuid(), "comm": parent_comm,
            "n": n, "threads": threads, "mem_mib": mem_mib, "kinds": list(kinds),
            "t0_ns": t0, "t1_ns": time.monotonic_ns(), "children": children}


def expected_events(ledger: dict) -> dict[str, int]:
    """Events the children generate, by type."""
    out = {"fork": 0, "clone": 0, "exec": 0, "exit": 0}
    for c in ledger["children"]:
        out["fork"] += 1
        out["exit"] += 1
        out["clone"] += len(c["tids"])
        out["exec"] += c["kind"] == "exec"
    return out


def expected_by_kind(n: int, threads: int, kinds=KINDS) -> Counter:
    """(child kind, event) -> count the children of run(n, threads, kinds) generate."""
    want = Counter()
    for kind in kinds:
        want[(kind, "fork")] = n
        want[(kind, "exit")] = n
    if "exec" in kinds:
        want[("exec", "exec")] = n
    if "threads" in kinds:
        want[("threads", "clone")] = n * threads
    return want


def start_as(uid: int, n: int = 5, threads: int = 3, mem_mib: int = 32,
             kinds=KINDS) -> subprocess.Popen:
    """Start the workload as a script under `uid` (needs root); see finish().
    Its own events under that uid are one exec and one exit besides the children's
    (its fork happens as root, before the uid change)."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--n", str(n), "--threads",
           str(threads), "--mem-mib", str(mem_mib), "--kinds", ",".join(kinds)]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            user=uid, group=uid, extra_groups=[], cwd="/")


def finish(proc: subprocess.Popen, timeout: float = 600) -> dict:
    out, err = proc.communicate(timeout=timeout)
    if proc.returncode != 0:
        raise RuntimeError(f"workload failed ({proc.returncode}): {err}")
    return json.loads(out)


def run_as(uid: int, timeout: float = 600, **kw) -> dict:
    """Run the workload under `uid` and return its ledger."""
    return finish(start_as(uid, **kw), timeout)


# The backends the one kernel suite runs against: the module and BCC in the lab only
# (marked kernel), the CO-RE engine natively as well wherever it can (marked core: the
# native unit-test pass runs it on this host, the lab pass on each lab kernel).
IN_LAB = os.environ.get("TOOLKIT_IN_LAB") == "1"
BACKEND_IDS = ("lkm", "ebpf", "ebpf-core")
BACKEND_ARGS = {"lkm": ("lkm", {}), "ebpf": ("ebpf", {"engine": "bcc"}),
                "ebpf-core": ("ebpf", {"engine": "core"})}


def backend_params(ids=BACKEND_IDS):
    """pytest params for `ids`, each marked where it runs (kernel: the lab; core: the
    native pass and the lab)."""
    import pytest
    return [pytest.param(i, id=i, marks=pytest.mark.core if i == "ebpf-core"
                         else pytest.mark.kernel) for i in ids]


def make_backend(ident: str, **opts):
    """A backend by suite id: lkm, ebpf (the BCC engine) or ebpf-core."""
    from toolkit.backends.base import get_backend
    name, base_opts = BACKEND_ARGS[ident]
    return get_backend(name, **base_opts, **opts)


def capture(backend, uid: int, read_while_running: bool = True, **kw):
    """Run the workload as `uid` while reading `backend`; return (ledger, records of uid)."""
    backend.drain(0.3)
    proc = start_as(uid, **kw)
    records = []
    while read_while_running and proc.poll() is None:
        records.extend(backend.read(0.2))
    ledger = finish(proc)
    records.extend(backend.drain(1.0))
    return ledger, [r for r in records if r.uid == uid]


OWN_EVENTS = {"exec": 1, "exit": 1}   # the workload process itself, under its uid


def assert_exact_accounting(stats, ledger: dict, records: list) -> Counter:
    """Every event the workload generated is either delivered or a counted drop, exactly;
    the buffer did overflow; every delivered record reached user space."""
    generated = Counter(expected_events(ledger)) + Counter(OWN_EVENTS)
    for ev, c in stats.events.items():
        assert c.seen == c.filtered + c.delivered + c.dropped, (ev, c)
        assert c.delivered + c.dropped == generated[ev], (ev, c, generated)
    assert stats.dropped > 0, "the tiny buffer should have overflowed"
    assert len(records) == sum(c.delivered for c in stats.events.values())
    assert stats.read_lost == 0
    return generated


def helper(tmpdir: str | os.PathLike | None = None, source: Path = HELPER_SRC) -> Path:
    """Compile tests/kernel/tk_helper.c, or another helper `source` beside it, (once per
    content) and return the binary."""
    import hashlib
    import re
    src = source.read_bytes()
    for inc in re.findall(rb'#include "([^"]+)"', src):    # a changed header rebuilds
        src += (source.parent / inc.decode()).read_bytes()
    out_dir = Path(tmpdir or "/tmp/toolkit-tests")
    out_dir.mkdir(parents=True, exist_ok=True)
    out_dir.chmod(0o755)
    exe = out_dir / f"{source.stem}-{hashlib.sha256(src).hexdigest()[:12]}"
    if not exe.exists():
        subprocess.run(["gcc", "-O2", "-Wall", "-o", str(exe) + ".tmp", str(source)],
                       check=True, timeout=300)
        os.replace(str(exe) + ".tmp", exe)
    exe.chmod(0o755)
    return exe


def main(argv=None) -> int:
    import argparse
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=5)
    p.add_argument("--threads", type=int, default=3)
    p.add_argument("--mem-mib", type=int, default=32)
    p.add_argument("--kinds", default=",".join(KINDS))
    a = p.parse_args(argv)
    ledger = run(a.n, a.threads, a.mem_mib, tuple(a.kinds.split(",")))
    json.dump(ledger, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
