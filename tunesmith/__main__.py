"""`python -m tunesmith ...`: the `tunesmith` console script (`flows.cli`)."""

import sys

from flows.cli import main

sys.exit(main())
