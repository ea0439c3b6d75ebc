"""`python -m goodput.controllers.cli`: the `goodput` console script."""

import sys

from goodput.controllers.cli import main

sys.exit(main())
