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
