"""Every error the toolkit raises on purpose, and the exit status each one means.

Like psutil's one exceptions module: a command that cannot do what it was asked raises
a ``ToolkitError`` (a one-line message and an optional hint saying what to do). The CLI
has one handler for all of them (``toolkit.cli.main``), so the same failure exits with
the same status in every command and never prints a traceback.

Exit statuses of every ``toolkit`` command (also in ``toolkit --help`` and docs/cli.md):

  0  done
  1  `toolkit doctor`: a requested backend cannot run here at all;
     `toolkit lab run`: whatever the command run in the lab returned
  2  an error: bad input (a usage error) or an operation that failed (ToolkitError,
     message on stderr with a hint)
  3  `toolkit doctor`: a requested backend runs only in the lab VM
  130 interrupted (Ctrl-C)
"""
from __future__ import annotations

EXIT_OK = 0
EXIT_UNAVAILABLE = 1    # doctor: cannot run at all
EXIT_ERROR = 2          # ToolkitError and usage errors (click's own convention)
EXIT_LAB_ONLY = 3       # doctor: runs only in the lab
EXIT_INTERRUPTED = 130

EXIT_CODES = {
    EXIT_OK: "done",
    EXIT_UNAVAILABLE: "doctor: a requested backend cannot run here at all "
                      "(lab run: the command's own status)",
    EXIT_ERROR: "an error: bad input, or the operation failed (message and hint on stderr)",
    EXIT_LAB_ONLY: "doctor: a requested backend runs only in the lab VM",
    EXIT_INTERRUPTED: "interrupted (Ctrl-C)",
}


class ToolkitError(Exception):
    """A failure the user can act on: a one-line message and an optional hint."""

    exit_code = EXIT_ERROR

    def __init__(self, message: str, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class BackendError(ToolkitError):
    """A backend cannot run here, or failed while running."""


class WorkloadError(ToolkitError):
    """A bench workload (forkstorm, memapp, ...) could not be built or run."""


class BenchError(ToolkitError):
    """A bench run could not be carried out."""


class ReportError(ToolkitError):
    """A results directory cannot be read (missing, corrupt, unknown version)."""


class LabError(ToolkitError):
    """The lab VM cannot be booted or used."""


class InspectError(ToolkitError):
    """A pid that cannot be inspected (no such process, a kernel thread, gone)."""


class QuotaError(ToolkitError):
    """A quota could not be set, listed or cleared."""


def exit_codes_help() -> str:
    """The exit statuses, as the CLI's --help epilog shows them."""
    return "\b\nExit status:\n" + "\n".join(f"  {c:<3} {t}" for c, t in EXIT_CODES.items())
