"""How tidepool starts child processes so none outlives its parent.

A child runs in its own session (Ctrl-C reaches only the parent, which stops
children in order), so a parent killed with SIGKILL would leave it running.
`setpriv --pdeathsig TERM` (util-linux, on every Debian) asks the kernel to send
the child SIGTERM when its parent dies: an engine then drains and deregisters as
on any stop. Where setpriv is missing, children start without the guard.
"""

from __future__ import annotations

import shutil
import sys
from collections.abc import Sequence

ORPHAN_GUARD: tuple[str, ...] = (
    ("setpriv", "--pdeathsig", "TERM") if shutil.which("setpriv") else ()
)


def tidepool_argv(args: Sequence[str]) -> list[str]:
    """`python -m tidepool ARGS…` behind the orphan guard."""
    return [*ORPHAN_GUARD, sys.executable, "-m", "tidepool", *args]
