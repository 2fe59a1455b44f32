"""`toolkit lab run|info`: the lab VM."""
from __future__ import annotations

import sys

import click


@click.group()
def lab():
    """The lab VM: a stock distribution kernel under QEMU (virtme-ng) where both backends run."""


@lab.command("run", context_settings={"ignore_unknown_options": True})
@click.option("--kernel", help="Lab kernel: a release prefix (6.1, 6.12) or a vmlinuz path "
              "(default: the newest installed 6.1; `toolkit lab info` lists them).")
@click.option("--cpus", type=click.IntRange(1, 64), help="Guest CPUs (default: min(2, host)).")
@click.option("--memory", default="4G", show_default=True, help="Guest memory.")
@click.option("--results", type=click.Path(file_okay=False),
              help="Directory shared read-write with the guest (default: results/).")
@click.option("--rwdir", multiple=True, type=click.Path(exists=True, file_okay=False),
              help="Another host directory the guest may write (repeatable).")
@click.option("--timeout", type=float, help="Kill the VM after this many seconds.")
@click.option("--silence", type=click.FloatRange(min=0),
              help="Kill the VM when the guest has written nothing (output, kernel log, "
              "console) for this many seconds (default $TOOLKIT_LAB_SILENCE or 720; 0: never).")
@click.option("--no-prebuild", is_flag=True,
              help="Do not build the module for the lab kernel on the host first.")
@click.argument("cmd", nargs=-1, required=True, type=click.UNPROCESSED)
def lab_run(kernel, cpus, memory, results, rwdir, timeout, silence, no_prebuild, cmd):
    """Boot the lab, run CMD in it, stream its output, exit with its status.

    The host filesystem is visible read-only; the results directory is shared
    read-write, so files written there remain on the host. A kernel fault in the guest
    (oops, BUG, soft lockup, hung task) ends it: the exit status is then non-zero and
    the guest's last kernel messages are printed. Example:

        toolkit lab run -- uname -r
    """
    from .. import lab as L
    status = L.run(list(cmd), kernel=kernel, cpus=cpus, memory=memory, results=results,
                   rwdirs=list(rwdir), timeout=timeout, prebuild=not no_prebuild,
                   silence=silence)
    sys.exit(status)


@lab.command("info")
@click.option("--kernel", help="Show this lab kernel (release prefix or path) as the selected one.")
def lab_info(kernel):
    """Show the installed lab kernels, the selected one, the accelerator (KVM or TCG) and
    the tools that would be used."""
    from tabulate import tabulate

    from .. import lab as L
    if kernel:
        L.find_kernel(kernel)  # an unknown kernel asked for by name: error, exit 2
    i = L.info(kernel)
    acc = i.get("accel") or {}
    rows = [("kernel", i.get("kernel", "-")), ("headers", i.get("headers", False)),
            ("accelerator", f"{acc.get('name', '?')}: {acc.get('reason', '')}"),
            ("TCG threads", acc.get("threads", "-")),
            ("virtme-ng", i.get("vng") or "missing"), ("qemu", i.get("qemu") or "missing")]
    if "error" in i:
        rows.append(("error", i["error"]))
    click.echo(tabulate(rows, tablefmt="plain"))
    click.echo("\ninstalled lab kernels (pick one with --kernel RELEASE-PREFIX):")
    kernels = [(k["release"], "yes" if k["headers"] else "no",
                "*" if k["kernel"] == i.get("kernel") else "", k["kernel"])
               for k in i["kernels"]]
    click.echo(tabulate(kernels, headers=["release", "headers", "selected", "image"])
               if kernels else "  none (run bin/setup)")
    sys.exit(0 if i.get("usable") else 1)
