"""`python -m observability`: regenerate manifests/observability/ (a test fails while they are stale)."""

import sys

from observability.output import main

sys.exit(main())
