"""The lab kernel cache: damaged and partial entries are found, never booted, fetched again."""
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import bounded
from toolkit import kcache, kfetch, lab
from test_lab import make_entry

REL = "6.12.95+deb12-amd64"


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("TOOLKIT_CACHE", str(tmp_path))
    monkeypatch.delenv("TOOLKIT_LAB_KERNEL", raising=False)
    monkeypatch.delenv("TOOLKIT_LAB_LINES", raising=False)
    return tmp_path


def test_an_intact_entry_passes_both_checks(cache):
    root = make_entry(cache, REL, "6.12")
    assert kcache.check(root).ok and kcache.check(root, full=True).ok
    assert lab.find_kernel("6.12") == root / "boot" / f"vmlinuz-{REL}"


@pytest.mark.parametrize("damage, full_only", [
    ("truncate the image", False), ("remove modules.dep", False),
    ("repoint the build link", False), ("flip a byte in a module", True),
    ("delete a module", True), ("edit the manifest", False)])
def test_a_damaged_entry_is_corrupt_and_never_booted(cache, damage, full_only):
    root = make_entry(cache, REL, "6.12")
    mods = root / "lib" / "modules" / REL
    if damage == "truncate the image":
        (root / "boot" / f"vmlinuz-{REL}").write_bytes(b"MZ")
    elif damage == "remove modules.dep":
        (mods / "modules.dep").unlink()
    elif damage == "repoint the build link":
        (mods / "build").unlink()
        (mods / "build").symlink_to("/usr/src/elsewhere")
    elif damage == "flip a byte in a module":
        ko = mods / "kernel" / "virtio.ko"
        data = bytearray(ko.read_bytes())
        data[-1] ^= 0xFF
        ko.write_bytes(bytes(data))            # same size: only the full check sees it
    elif damage == "delete a module":
        (mods / "kernel" / "virtio.ko").unlink()
    else:
        with open(root / kcache.MANIFEST, "a") as f:
            f.write("0" * 64 + " 1 extra\n")
    assert kcache.check(root, full=True).status == "corrupt"
    assert kcache.check(root).ok == full_only
    if not full_only:
        with pytest.raises(lab.LabError, match="is corrupt .* never booted"):
            lab.find_kernel("6.12")


def test_an_entry_without_stamp_or_moved_is_not_booted(cache):
    root = make_entry(cache, REL, "6.12")
    moved = cache / "elsewhere" / REL          # a copied cache: its links point back here
    shutil.copytree(root, moved, symlinks=True)
    assert "made for" in kcache.check(moved).reason
    renamed = root.with_name("6.12.96+deb12-amd64")
    shutil.copytree(root, renamed, symlinks=True)
    assert "another format or release" in kcache.check(renamed).reason
    (root / kcache.STAMP).unlink()
    e = kcache.check(root)
    assert e.status == "partial" and "interrupted" in e.reason
    with pytest.raises(lab.LabError, match="never booted"):
        lab.find_kernel(REL)


@pytest.mark.timeout(600)
def test_a_damaged_entry_and_an_interrupted_fetch_are_replaced_by_the_next_fetch(cache):
    """Real apt, tmp cache: the 6.12 line's current release is cached but damaged, and a
    fetch of it is killed while it unpacks (as Ctrl-C or a crash would). Neither boots;
    bin/setup's `fetch --if-missing` replaces both with an intact entry. Needs apt's
    network (like bin/setup)."""
    if os.geteuid() != 0:
        pytest.skip("apt-get download as root (the lab cache is root's)")
    apt = kfetch.Apt(kcache.lines()["6.12"])
    apt.update(quiet=True)
    release, _ = kfetch.resolve(apt, "6.12")
    damaged = make_entry(cache, release, "6.12")
    (damaged / "boot" / f"vmlinuz-{release}").write_bytes(b"MZ")
    cmd = [str(Path(sys.executable).parent / "toolkit"), "lab", "kernels", "fetch", "--force",
           "6.12"]
    p = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        for line in bounded.lines(p.stderr, 300, "the fetch's progress"):
            if "unpacking 1/" in line:
                break
        else:
            raise AssertionError("the fetch ended before it unpacked anything")
    finally:
        os.killpg(p.pid, signal.SIGKILL)
    p.wait(timeout=30)
    assert sorted(e.status for e in kcache.entries()) == ["corrupt", "partial"]
    with pytest.raises(lab.LabError, match="never booted"):
        lab.find_kernel("6.12")
    got = kfetch.ensure(["6.12"], quiet=True)
    assert [(e.release, e.status) for e in kcache.entries()] == [(release, "ok")]
    assert kcache.check(got[0].path, full=True).ok
    assert not list((cache / "kernels").glob(".*")), "partial or old directories left"
    assert lab.find_kernel("6.12") == got[0].kernel
    assert (got[0].modules / "build").resolve() == got[0].headers


def test_lines_can_be_added_without_code(cache, monkeypatch, tmp_path):
    extra = tmp_path / "lines.toml"
    extra.write_text('[lines."6.13"]\ndescription = "a test line"\n'
                     'sources = ["http://deb.debian.org/debian trixie main"]\n'
                     'keyring = "/usr/share/keyrings/debian-archive-keyring.gpg"\n'
                     'meta = "linux-image-amd64"\nrelease_pattern = \'^6\\.13\\.\'\n'
                     'packages = ["linux-image-{release}"]\ndeps = "^$"\n')
    monkeypatch.setenv("TOOLKIT_LAB_LINES", str(extra))
    assert set(kcache.lines()) == {"6.1", "6.12", "6.13"}
    assert kcache.line_for("6.13.2").name == "6.13" and kcache.line_for("6.12.1").name == "6.12"
    assert kcache.default_line() == "6.1"
    with pytest.raises(kcache.LabError, match="no lab kernel line"):
        kcache.line_for("5.10")


def test_private_apt_never_reads_or_writes_etc_apt(cache):
    apt = kfetch.Apt(kcache.lines()["6.12"])
    apt.prepare()
    opts = apt.options()
    values = dict(o.split("=", 1) for o in opts[1::2])
    for key in ("Dir::Etc::SourceList", "Dir::Etc::SourceParts", "Dir::State::Lists",
                "Dir::State::status", "Dir::Cache", "Dir::Etc::PreferencesParts"):
        assert values[key].startswith(str(cache)), key
    assert "bookworm-backports" in (apt.dir / "sources.list").read_text()
    assert not list((apt.dir / "sources.list.d").iterdir())
