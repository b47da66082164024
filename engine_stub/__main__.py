"""`python -m engine_stub ...` runs the engine stub."""

from __future__ import annotations

import sys

from engine_stub.server import main

sys.exit(main())
