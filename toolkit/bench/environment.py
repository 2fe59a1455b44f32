"""Where a run happened: kernel, virtualization (native / kvm / tcg), CPUs, versions."""
from __future__ import annotations

import os
import platform
import shutil
import subprocess

from .. import __version__, schema, sysinfo

ACCEL_ENV = "TOOLKIT_LAB_ACCEL"   # set by the lab (kvm|tcg) when it knows; wins over guessing


def detect_virtualization() -> tuple[str, str]:
    """(native|kvm|tcg|vm, how we know). QEMU without KVM is TCG emulation."""
    accel = os.environ.get(ACCEL_ENV, "").strip().lower()
    if accel in ("kvm", "tcg"):
        return accel, f"${ACCEL_ENV}"
    tool = shutil.which("systemd-detect-virt")
    if tool:
        try:
            p = subprocess.run([tool, "--vm"], capture_output=True, text=True, timeout=5)
            what = p.stdout.strip()
            if what == "none" or (p.returncode != 0 and not what):
                return "native", "systemd-detect-virt --vm: none"
            if what == "qemu":
                return "tcg", "systemd-detect-virt --vm: qemu (no KVM)"
            if what == "kvm":
                return "kvm", "systemd-detect-virt --vm: kvm"
            if what:
                return "vm", f"systemd-detect-virt --vm: {what}"
        except (OSError, subprocess.TimeoutExpired):
            pass
    flags = next((ln for ln in sysinfo.read_text("/proc/cpuinfo", "").splitlines()
                  if ln.startswith("flags")), "")
    if " hypervisor" not in flags:
        return "native", "no hypervisor flag in /proc/cpuinfo"
    vendor = sysinfo.read_text("/sys/class/dmi/id/sys_vendor", "").strip()
    clocks = sysinfo.read_text("/sys/devices/system/clocksource/clocksource0/available_clocksource", "")
    if "kvm-clock" in clocks:
        return "kvm", f"hypervisor flag, kvm-clock ({vendor or 'unknown vendor'})"
    if vendor == "QEMU":
        return "tcg", "hypervisor flag, QEMU without kvm-clock"
    return "vm", f"hypervisor flag ({vendor or 'unknown vendor'})"


def environment(parameters: dict) -> dict:
    virt, how = detect_virtualization()
    return {
        "kernel_release": sysinfo.release(),
        "machine": os.uname().machine,
        "virtualization": virt,
        "virtualization_detail": how,
        # single- or multi-threaded TCG (toolkit/lab.py says why 6.12 runs single)
        "tcg_threads": os.environ.get("TOOLKIT_LAB_TCG") if virt == "tcg" else None,
        "in_lab": os.environ.get("TOOLKIT_IN_LAB") == "1",
        "cpus": os.cpu_count(),
        "toolkit_version": __version__,
        "record_version": schema.RECORD_VERSION,
        "python": platform.python_version(),
        "parameters": parameters,
    }
