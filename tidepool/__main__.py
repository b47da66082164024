"""`python -m tidepool` is the `tidepool` command."""

import sys

from tidepool.cli import main

sys.exit(main())
