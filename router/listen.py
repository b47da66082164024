"""Binding the router's listening port: one clear line when it is taken.

Only the workers of a router group share a port (SO_REUSEPORT); a second router
started by mistake on a port in use must fail at once, saying so.
"""

from __future__ import annotations

import errno
import socket

from tidepool.runtime.options import parse_host_port


class ListenError(OSError):
    """The router cannot listen where it was told to; the message names the flag."""


def ensure_free(listen: str) -> None:
    """Raise ListenError naming `--listen` when another process holds the port."""
    host, port = parse_host_port(listen)
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # SO_REUSEADDR: a port in TIME_WAIT is free to listen on; only a listener is not.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise ListenError(f"--listen: cannot listen on {listen}: {bind_error(exc)}") from None


def bind_error(exc: OSError) -> str:
    """`address in use` for the usual case, the system's words otherwise."""
    # uvloop's bind errors carry no errno, only the text.
    if exc.errno == errno.EADDRINUSE or "in use" in str(exc).lower():
        return "address in use (is another router running on this port?)"
    return exc.strerror or str(exc)
