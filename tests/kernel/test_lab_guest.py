"""Inside the lab: the guest is set up for both backends."""
import os
from pathlib import Path

import pytest
from bounded import hang_if_asked

pytestmark = pytest.mark.kernel


def test_running_in_the_lab_as_root():
    hang_if_asked("test_running_in_the_lab_as_root")    # TOOLKIT_TEST_HANG (docs/testing.md)
    assert os.environ.get("TOOLKIT_IN_LAB") == "1"
    assert os.geteuid() == 0


def test_headers_and_bcc_links_present():
    rel = os.uname().release
    assert (Path("/lib/modules") / rel / "build" / "Makefile").exists()
    assert (Path("/lib/modules") / rel / "source").exists()


def test_kernel_can_load_modules_and_has_kprobes():
    assert Path("/proc/modules").exists()
    syms = Path("/proc/kallsyms").read_text()
    assert " register_kprobe\n" in syms


def test_tracefs_mounted_and_bcc_imports():
    assert Path("/sys/kernel/tracing/available_events").exists()
    import bcc  # noqa: F401


def test_results_dir_writable():
    from toolkit import paths
    f = paths.RESULTS_DIR / ".test" / f"guest-write-{os.uname().release}-{os.getpid()}"
    f.parent.mkdir(parents=True, exist_ok=True)
    f.write_text("ok")
    assert f.read_text() == "ok"
    f.unlink()
