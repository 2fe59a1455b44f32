"""What older versions of bin/setup left on a machine, and how to remove it.

Before the lab's kernels lived in a private cache (toolkit.kcache), bin/setup installed
linux-image-amd64 (Ubuntu: -generic) and, on Debian 12, linux-image-6.12.*+deb12-amd64
from bookworm-backports into /boot, with a backports source and an apt pin under
/etc/apt. `toolkit lab info` and `toolkit doctor` report what is still there and say how
to remove it. Nothing here removes anything: which kernel a machine boots is its owner's
decision (the newest installed kernel becomes the default at the next reboot).
"""
from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

SOURCE = Path("/etc/apt/sources.list.d/toolkit-bookworm-backports.sources")
PIN = Path("/etc/apt/preferences.d/toolkit-bookworm-backports")
# what older bin/setup versions installed (dpkg-query patterns)
PACKAGES = ("linux-image-6.12.*+deb12-amd64", "linux-headers-6.12.*+deb12-amd64",
            "linux-image-amd64", "linux-headers-amd64",
            "linux-image-generic", "linux-headers-generic")


def installed(patterns=PACKAGES) -> list[str]:
    """The installed packages matching the patterns (dpkg's database; [] without dpkg)."""
    if not shutil.which("dpkg-query"):
        return []
    p = subprocess.run(["dpkg-query", "-W", "-f=${Package} ${Status}\\n", *patterns],
                       capture_output=True, text=True)
    return sorted(ln.split()[0] for ln in p.stdout.splitlines()
                  if ln.endswith(" install ok installed"))


def findings(source: Path | None = None, pin: Path | None = None,
             packages: list[str] | None = None) -> list[dict]:
    """Each leftover: what it is, where, and the command that removes it (not run)."""
    source, pin = source or SOURCE, pin or PIN
    out = []
    files = [str(f) for f in (source, pin) if f.exists()]
    if files:
        out.append({"what": "the bookworm-backports apt source and pin older bin/setup "
                    "versions added", "items": files,
                    "remove": f"rm {' '.join(files)} && apt-get update"})
    pkgs = installed() if packages is None else packages
    running = f"linux-image-{os.uname().release}"
    bpo = [p for p in pkgs if p.startswith(("linux-image-6.12.", "linux-headers-6.12."))]
    if bpo:
        keep = [p for p in bpo if p == running]
        drop = [p for p in bpo if p not in keep]
        item = {"what": "the 6.12 kernel older bin/setup versions installed into /boot "
                "(the lab now boots it from its own cache)", "items": bpo,
                "remove": f"apt-get purge {' '.join(drop)}" if drop else ""}
        if keep:
            item["note"] = f"{running} is the running kernel: keep it"
        out.append(item)
    meta = [p for p in pkgs if p in ("linux-image-amd64", "linux-headers-amd64",
                                     "linux-image-generic", "linux-headers-generic")]
    if meta:
        out.append({"what": "kernel metapackages older bin/setup versions installed; keep "
                    "them if this machine's own kernel comes from them (they keep it updated)",
                    "items": meta,
                    "remove": f"apt-get purge {' '.join(meta)} (only if you did not install "
                    "them yourself; then check which kernel the boot loader starts)"})
    return out
