"""toolkit command line: the `main` group, its one error handler, and every command,
registered here in one visible list (COMMANDS). Heavy imports (bcc, pandas,
matplotlib) happen inside the commands.

Each command module imports only `common` (and the toolkit's other packages), never
this one, so nothing imports back up from the module that imports it.
"""
from __future__ import annotations

import click

from .. import __version__
from ..errors import EXIT_INTERRUPTED, ToolkitError, exit_codes_help
from . import bench, doctor, export, inspect, lab, lkm, quota, top, watch


def show_error(e: ToolkitError) -> None:
    """`error: <first line>`, further lines indented, then `hint: ...`; on stderr."""
    lines = str(e).splitlines() or ["error"]
    click.echo(f"error: {lines[0]}", err=True)
    for line in lines[1:]:
        click.echo(f"  {line}", err=True)
    if e.hint:
        click.echo(f"hint: {e.hint}", err=True)


class ToolkitGroup(click.Group):
    """The one handler: every ToolkitError of every command prints its message and hint
    and exits with its exit_code (2); Ctrl-C exits 130; never a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except ToolkitError as e:
            show_error(e)
            ctx.exit(e.exit_code)
        except OSError as e:    # a file or device refused: say which, no traceback
            show_error(ToolkitError(f"{e.filename + ': ' if e.filename else ''}"
                                    f"{e.strerror or e}"))
            ctx.exit(ToolkitError.exit_code)
        except KeyboardInterrupt:
            click.echo("interrupted", err=True)
            ctx.exit(EXIT_INTERRUPTED)


@click.group(cls=ToolkitGroup, epilog=exit_codes_help(),
             context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="toolkit")
def main():
    """Track process lifecycles (fork/exec/exit) and RSS with a kprobe kernel module (lkm)
    or BCC eBPF (ebpf), compare them with polling ps, and benchmark all three."""


# Every command of `toolkit`, in the order `toolkit --help` lists them.
COMMANDS = [
    doctor.doctor,
    lab.lab,
    watch.watch,
    watch.mem,
    top.top,
    export.export,
    lkm.lkm,
    quota.quota,
    inspect.inspect,
    bench.bench,
    bench.report,
]
for _cmd in COMMANDS:
    main.add_command(_cmd)

if __name__ == "__main__":
    main()
