"""The exit status of a finished load run: did its error share stay within the limit.

Pure: it reads a LoadResult and decides, so the rule is tested without a run.
"""

from __future__ import annotations

from dataclasses import dataclass

from loadtest.result import LoadResult

EXIT_OK = 0
EXIT_UNREACHABLE = 1
"""The target could not be reached at the start; nothing was sent."""
EXIT_USAGE = 2
"""A bad flag, or flags that contradict each other (argparse's status)."""
EXIT_TOO_MANY_ERRORS = 3
"""The run finished, but more calls failed than `max_error_rate` allows."""
EXIT_INTERRUPTED = 130
"""Ctrl-C: the run was cut short, so its numbers are partial (128 + SIGINT)."""


@dataclass(frozen=True)
class Verdict:
    """How a run ends: its exit status and, when it failed on errors, the line saying so."""

    status: int
    complaint: str | None = None


def judge(result: LoadResult) -> Verdict:
    """The exit status of `result` against its config's `max_error_rate`.

    Failed calls are those that did not end OK, abandoned ones included, over the
    calls sent; a run that sent nothing has no errors. Ctrl-C wins over errors:
    a partial run's share says little, and 130 is what a shell expects.
    """
    share, limit = result.error_share, result.config.max_error_rate
    complaint = None
    if share > limit:
        failed = result.errors + result.abandoned
        complaint = (
            f"{share:.2%} of calls failed ({failed} of {result.sent}), above the {limit:.2%}"
            f" that --max-error-rate {limit:g} allows; exit status {EXIT_TOO_MANY_ERRORS}"
        )
    if result.interrupted:
        return Verdict(EXIT_INTERRUPTED, complaint)
    return Verdict(EXIT_OK if complaint is None else EXIT_TOO_MANY_ERRORS, complaint)
