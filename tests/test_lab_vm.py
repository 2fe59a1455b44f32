"""Boot the real lab once from the host: output, exit status and files come back."""
import re
import os
import subprocess
import sys
from pathlib import Path

import pytest

from toolkit import lab, paths

pytestmark = pytest.mark.vm


def test_lab_run_streams_output_propagates_status_and_keeps_results(tmp_path):
    release = lab.find_kernel().name.removeprefix("vmlinuz-")
    marker = paths.RESULTS_DIR / ".test" / f"lab-marker-{os.getpid()}"
    marker.parent.mkdir(parents=True, exist_ok=True)
    toolkit = Path(sys.executable).parent / "toolkit"
    p = subprocess.run([str(toolkit), "lab", "run", "--timeout", "600", "--", "sh", "-c",
                        f"uname -r; echo written-in-guest > {marker}; echo to-stderr >&2; exit 7"],
                       capture_output=True, text=True, timeout=700)
    assert p.stdout.splitlines()[0] == release
    assert "to-stderr" in p.stderr
    assert re.search(r"under (single-threaded |multi-threaded )?TCG|under KVM", p.stderr)
    assert p.returncode == 7
    assert marker.read_text() == "written-in-guest\n"
    marker.unlink()


@pytest.mark.parametrize("line", ["6.1", "6.12"])
def test_lab_boots_each_line_from_the_cache_with_its_modules_and_headers(line):
    """The guest runs the cached kernel and sees that kernel's modules and headers at
    /lib/modules/<release> (virtme-ng links the entry's modules there), while the host's
    /lib/modules and /boot hold nothing of it."""
    from toolkit import kcache
    kernel = lab.find_kernel(line)
    entry = kcache.find(kernel.name.removeprefix("vmlinuz-"))
    assert entry is not None and entry.ok and kernel == entry.kernel
    toolkit = Path(sys.executable).parent / "toolkit"
    script = ('r=$(uname -r); echo "$r"; readlink -f /lib/modules/$r; '
              'readlink -f /lib/modules/$r/build; '
              'test -f /lib/modules/$r/build/Makefile && echo headers; '
              'modprobe -n -v 9p >/dev/null && echo modules')
    p = subprocess.run([str(toolkit), "lab", "run", "--kernel", line, "--no-prebuild",
                        "--timeout", "600", "--", "sh", "-c", script],
                       capture_output=True, text=True, timeout=700)
    assert p.returncode == 0, p.stderr[-2000:]
    out = p.stdout.splitlines()
    assert out == [entry.release, str(entry.modules), str(entry.headers), "headers",
                   "modules"], p.stdout
    assert not Path("/lib/modules", entry.release).exists()
    assert not Path("/boot", f"vmlinuz-{entry.release}").exists()
