"""bin/setup on a machine with no lab kernels: it installs no kernel package and no apt
source, leaves /boot and /etc/apt as they were, and the lab's cache then holds both lab
kernels (issue 20)."""
import hashlib
import os
import re
import subprocess
from pathlib import Path

import pytest

from toolkit import kcache, paths

SETUP = paths.ROOT / "bin" / "setup"


def snapshot(*dirs: str) -> dict[str, str]:
    """Every path under `dirs` with its content's sha256 (files), target (links) or 'dir'."""
    out = {}
    for d in dirs:
        for dirpath, subdirs, files in os.walk(d):
            for name in subdirs + files:
                p = Path(dirpath, name)
                if p.is_symlink():
                    out[str(p)] = "-> " + os.readlink(p)
                elif p.is_dir():
                    out[str(p)] = "dir"
                else:
                    out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def kernel_packages() -> list[str]:
    p = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Status}\\n", "linux-image-*",
                        "linux-headers-*", "linux-kbuild-*"], capture_output=True, text=True,
                       timeout=60)
    return sorted(ln.split()[0] for ln in p.stdout.splitlines() if "install ok installed" in ln)


def test_setup_installs_no_kernel_and_writes_no_apt_source():
    text = SETUP.read_text()
    pkgs = re.search(r'^pkgs="(.*?)"', text, re.S | re.M).group(1)
    assert "linux-image" not in pkgs and "linux-headers-amd64" not in pkgs
    assert "/etc/apt" not in text and "preferences.d" not in text
    assert {"clang", "llvm", "bpftool", "libbpf-dev", "udev"} <= set(pkgs.split())


@pytest.mark.timeout(1500)
def test_setup_leaves_boot_and_apt_alone_and_fetches_both_lab_kernels(tmp_path, monkeypatch):
    """A fresh cache (a tmp dir, so the shared one is not refetched): bin/setup fills it
    with 6.1 and 6.12; /etc/apt, /boot, /lib/modules and the kernel packages unchanged."""
    if os.geteuid() != 0:
        pytest.skip("bin/setup installs packages: root")
    dirs = ("/etc/apt", "/boot", "/lib/modules")
    before, pkgs = snapshot(*dirs), kernel_packages()
    env = dict(os.environ, TOOLKIT_CACHE=str(tmp_path))
    p = subprocess.run([str(SETUP), "--quiet"], env=env, capture_output=True, text=True,
                       timeout=1400)
    assert p.returncode == 0, p.stderr[-3000:]
    assert snapshot(*dirs) == before
    assert kernel_packages() == pkgs
    monkeypatch.setenv(kcache.CACHE_ENV, str(tmp_path))
    es = kcache.entries(full=True)
    assert sorted((e.stamp.get("line"), e.status) for e in es) == [("6.1", "ok"),
                                                                   ("6.12", "ok")]
    for e in es:
        assert e.kernel.exists() and (e.modules / "modules.dep").exists()
        assert (e.modules / "build").resolve() == e.headers and (e.headers / "Makefile").exists()
