"""`python -m controllers.cli`: the `goodput` console script."""

import sys

from controllers.cli import main

sys.exit(main())
