"""A hand-rolled HTTP/2 frame relay: the router's cheaper data path (`--data-path relay`).

It decodes only the request HEADERS (to route) and forwards DATA frames as they
are, with HTTP/2 flow control carried across both hops as backpressure. HTTP/2
itself is the sans-IO core in `h2core`; `connection` is its asyncio transport
and `relay` the calls. The modules may be compiled with mypyc (`build`).
"""

from router.relay import build
from router.relay.server import RelayServer, start_relay
from router.relay.upstream import Keepalive

__all__ = ["BUILD", "Keepalive", "RelayServer", "start_relay"]

BUILD = build.loaded()
"""'compiled' (mypyc, see setup.py) or 'pure'."""
build.warn_if_stale()
