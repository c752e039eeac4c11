"""The grader's exceptions: one root, and the exit status each maps to; imports nothing of grader.

Every exception the grader raises on purpose derives from `GraderError`. The command line turns
them into a one-line message and an exit status in one place (`grader.cli.main`); each stays
defined beside the code that raises it, so this module needs nothing of the rest.
"""

from __future__ import annotations

# The exit statuses of the command line.
EXIT_FULL, EXIT_PARTIAL, EXIT_UNGRADABLE = 0, 1, 2
EXIT_INTERRUPTED = 130  # the shell's convention for a run stopped by Ctrl-C


class GraderError(Exception):
    """A problem the grader reports in one line and an exit status, never with a traceback."""

    exit_status: int = EXIT_UNGRADABLE


class UsageError(GraderError):
    """Bad arguments on the command line."""
