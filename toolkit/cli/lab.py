"""`toolkit lab run|info|kernels`: the lab VM and its kernels."""
from __future__ import annotations

import json
import sys

import click


@click.group()
def lab():
    """The lab VM: a stock distribution kernel under QEMU (virtme-ng) where both backends run."""


@lab.command("run", context_settings={"ignore_unknown_options": True})
@click.option("--kernel", help="Lab kernel: a line or release prefix (6.1, 6.12) or a vmlinuz path "
              "(default: the newest cached 6.1; `toolkit lab kernels` lists them).")
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
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def lab_info(kernel, as_json):
    """Show the cached lab kernels, the selected one, the accelerator (KVM or TCG), the
    tools that would be used, and what older bin/setup versions left on this machine."""
    from tabulate import tabulate

    from .. import lab as L
    if kernel:
        L.find_kernel(kernel)  # an unknown kernel asked for by name: error, exit 2
    i = L.info(kernel)
    if as_json:
        click.echo(json.dumps(i, indent=2))
        sys.exit(0 if i.get("usable") else 1)
    acc = i.get("accel") or {}
    rows = [("kernel", i.get("kernel", "-")), ("headers", i.get("headers", False)),
            ("accelerator", f"{acc.get('name', '?')}: {acc.get('reason', '')}"),
            ("TCG threads", acc.get("threads", "-")),
            ("virtme-ng", i.get("vng") or "missing"), ("qemu", i.get("qemu") or "missing"),
            ("kernel cache", i["cache"])]
    if "error" in i:
        rows.append(("error", i["error"]))
    click.echo(tabulate(rows, tablefmt="plain"))
    click.echo("\ncached lab kernels (pick one with --kernel RELEASE-PREFIX or LINE):")
    click.echo(_kernels_table(i["kernels"], i.get("kernel")))
    _echo_leftovers(i["leftovers"])
    sys.exit(0 if i.get("usable") else 1)


def _kernels_table(kernels: list[dict], selected: str | None = None) -> str:
    from tabulate import tabulate
    if not kernels:
        return "  none (`toolkit lab kernels fetch 6.1 6.12`, or run bin/setup)"
    rows = [(k["release"], k.get("line") or "-", f"{k['bytes'] / 1e6:.0f} MB",
             k["status"] + (f": {k['reason']}" if k.get("reason") else ""),
             "*" if selected and k["kernel"] == selected else "", k["path"])
            for k in kernels]
    return tabulate(rows, headers=["release", "line", "size", "status", "selected", "path"],
                    maxcolwidths=[None, None, None, 50, None, None])


def _echo_leftovers(found: list[dict]) -> None:
    if not found:
        return
    click.echo("\nleft by an older bin/setup (toolkit removes nothing; to remove it yourself):")
    for f in found:
        click.echo(f"  {f['what']}: {', '.join(f['items'])}")
        if f.get("note"):
            click.echo(f"    note: {f['note']}")
        if f.get("remove"):
            click.echo(f"    remove: {f['remove']}")


@lab.group("kernels", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.pass_context
def lab_kernels(ctx, as_json):
    """The lab kernels in the private cache ($TOOLKIT_CACHE, default /var/lib/toolkit):
    list them with their sizes (no subcommand), fetch, verify or remove them.
    docs/lab-kernels.md describes the cache."""
    if ctx.invoked_subcommand is not None:
        return
    from .. import kcache
    from .. import lab as L
    ks = L.lab_kernels()
    if as_json:
        click.echo(json.dumps({"cache": str(kcache.cache_dir()), "kernels": ks,
                               "lines": _lines()}, indent=2))
        return
    click.echo(f"lab kernel cache {kcache.kernels_dir()} "
               f"({sum(k['bytes'] for k in ks) / 1e6:.0f} MB)")
    click.echo(_kernels_table(ks))
    click.echo("\nlines (`toolkit lab kernels fetch LINE`): " +
               ", ".join(f"{n} ({d['description']})" for n, d in _lines().items()))


def _lines() -> dict:
    from .. import kcache
    return {n: {"description": ln.description, "sources": ln.sources,
                "default": ln.default} for n, ln in kcache.lines().items()}


@lab_kernels.command("fetch")
@click.option("--if-missing", is_flag=True,
              help="Only when no intact kernel of that line or prefix is cached (offline "
              "otherwise; what bin/setup runs).")
@click.option("--force", is_flag=True, help="Fetch again even if the release is cached.")
@click.option("--quiet", is_flag=True, help="No progress.")
@click.option("--json", "as_json", is_flag=True, help="Print the entries fetched as JSON.")
@click.argument("specs", nargs=-1, required=True)
def lab_kernels_fetch(if_missing, force, quiet, as_json, specs):
    """Fetch the lab kernels SPECS (a line such as 6.1 or 6.12: its current release; or a
    release prefix such as 6.1.0-57) with apt-get download, unpack them into the cache.

    apt runs with a private sources list and lists directory: /etc/apt, /boot and
    /lib/modules are not touched. A partial or damaged entry is fetched again."""
    from .. import kfetch
    if if_missing:
        got = kfetch.ensure(list(specs), quiet=quiet)
    else:
        got = [kfetch.fetch(s, quiet=quiet, force=force) for s in specs]
    if as_json:
        click.echo(json.dumps([e.as_dict() for e in got], indent=2))


@lab_kernels.command("verify")
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
@click.argument("specs", nargs=-1)
def lab_kernels_verify(as_json, specs):
    """Check every file of the cached kernels (SPECS, default all) against its manifest.
    Exit status 1 if one is partial or damaged (`fetch` replaces it)."""
    from .. import kcache
    es = kcache.entries(full=True)
    if specs:
        es = [e for s in specs for e in kcache.select(s, es)]
    if as_json:
        click.echo(json.dumps([e.as_dict() for e in es], indent=2))
    else:
        for e in es:
            click.echo(f"{e.release}: {e.status}" + (f" ({e.reason})" if e.reason else ""))
    sys.exit(0 if all(e.ok for e in es) else 1)


@lab_kernels.command("remove")
@click.argument("specs", nargs=-1, required=True)
def lab_kernels_remove(specs):
    """Remove the cached kernels SPECS (a line or a release prefix) from the cache."""
    from .. import kcache
    for s in specs:
        for e in kcache.remove(s):
            click.echo(f"removed {e.release} ({e.size() / 1e6:.0f} MB) from {e.path.parent}")
