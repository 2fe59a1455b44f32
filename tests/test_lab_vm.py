"""Boot the real lab from the host: output, exit status and files come back, each lab
line boots from the cache with its own modules and headers, a guest kernel crash ends the
run and says so, a kernel command re-runs itself in the lab.

Each boot costs ~40 s under TCG, and this part of bin/test runs before the lab kernels'
parts, so three boots do the work of five: the output test also checks the default line's
modules and headers, the crash test the other line's before it crashes."""
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest

from toolkit import kcache, lab, paths

pytestmark = pytest.mark.vm
TOOLKIT = Path(sys.executable).parent / "toolkit"
LINES = ("6.1", "6.12")
# what a guest says about its kernel, modules and headers (virtme-ng links the cached
# entry's modules at /lib/modules/<release>)
LINE_SCRIPT = ('r=$(uname -r); echo "$r"; readlink -f /lib/modules/$r; '
               'readlink -f /lib/modules/$r/build; '
               'test -f /lib/modules/$r/build/Makefile && echo headers; '
               'modprobe -n -v 9p >/dev/null && echo modules')


def line_of(release: str) -> str:
    return next(ln for ln in sorted(LINES, key=len, reverse=True)
                if release.startswith(ln + "."))


def check_line(kernel: Path, said: list[str]) -> None:
    """The guest ran the cached kernel `kernel` and saw that kernel's modules and headers,
    while the host's /lib/modules and /boot hold nothing of it."""
    entry = kcache.find(kernel.name.removeprefix("vmlinuz-"))
    assert entry is not None and entry.ok and kernel == entry.kernel
    assert said == [entry.release, str(entry.modules), str(entry.headers), "headers",
                    "modules"], said
    assert not Path("/lib/modules", entry.release).exists()
    assert not Path("/boot", f"vmlinuz-{entry.release}").exists()


def test_lab_run_streams_output_propagates_status_and_keeps_results():
    """The default lab kernel (no --kernel): stdout and stderr stream back, the exit status
    is the command's, a file written in results/ is here; and the default line boots from
    the cache with its modules and headers."""
    kernel = lab.find_kernel()
    marker = paths.RESULTS_DIR / ".test" / f"lab-marker-{os.getpid()}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    p = subprocess.run([str(TOOLKIT), "lab", "run", "--timeout", "600", "--", "sh", "-c",
                        f"{LINE_SCRIPT}; echo written-in-guest > {marker}; "
                        "echo to-stderr >&2; exit 7"],
                       capture_output=True, text=True, timeout=700)
    assert "to-stderr" in p.stderr
    assert re.search(r"under (single-threaded |multi-threaded )?TCG|under KVM", p.stderr)
    assert p.returncode == 7, p.stderr[-2000:]
    assert marker.read_text() == "written-in-guest\n"
    marker.unlink()
    check_line(kernel, p.stdout.splitlines())


def test_guest_kernel_crash_ends_the_run_and_says_so():
    """A kernel crash in the guest (sysrq c) ends the VM at once (panic=-1), and `lab run`
    says so with the panic's text from the console QEMU wrote to a host file; the sleep
    after it would otherwise hold the VM until --timeout. The guest is the other lab line
    (not the default), which first says its kernel, modules and headers."""
    other = next(ln for ln in LINES if ln != line_of(lab.find_kernel().name.removeprefix(
        "vmlinuz-")))
    kernel = lab.find_kernel(other)
    t0 = time.monotonic()
    p = subprocess.run([str(TOOLKIT), "lab", "run", "--kernel", other, "--no-prebuild",
                        "--timeout", "400", "--", "sh", "-c",
                        f"{LINE_SCRIPT}; echo guest-up; echo c > /proc/sysrq-trigger; "
                        "sleep 600"],
                       capture_output=True, text=True, timeout=500)
    took = time.monotonic() - t0
    print(f"crash run: {took:.0f} s")
    out = p.stdout.splitlines()
    assert p.returncode != 0 and out[-1:] == ["guest-up"], p
    assert "lab: the guest kernel crashed: " in p.stderr, p.stderr
    assert "sysrq triggered crash" in p.stderr, p.stderr      # the panic's own text
    assert "timed out" not in p.stderr
    console = re.search(r"\(console, (\S+)\):", p.stderr)
    assert console and "Kernel panic" in Path(console.group(1)).read_text(errors="replace")
    assert took < 300, took
    check_line(kernel, out[:-1])


def test_a_kernel_command_reruns_itself_in_the_lab():
    """`toolkit mem --backend lkm --lab` on the host re-runs itself in the lab VM, as a
    user types it: it says so, the guest's output comes back (the module's process table,
    read in the guest) and its exit status is the command's. (`bench memgrowth`'s own
    automatic re-run took 224 s here, most of it imports and compiles in the guest.)"""
    p = subprocess.run([str(TOOLKIT), "mem", "--backend", "lkm", "--lab", "--format", "json",
                        "--top", "3"], capture_output=True, text=True, timeout=700)
    assert p.returncode == 0, p.stderr[-3000:]
    assert re.search(r"^lab: running `toolkit mem --backend lkm --format json --top 3` in "
                     r"the lab VM", p.stderr, re.M), p.stderr[-3000:]
    d = json.loads(p.stdout)
    assert d["backend"] == "lkm" and len(d["processes"]) == 3, d
    assert d["source"]["processes"] == "kernel (/proc/toolkit/processes)", d["source"]
