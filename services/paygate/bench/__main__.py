"""`python -m paygate.bench` runs paygate-bench (the console script may not be installed)."""

import sys

from paygate.bench.cli import main

sys.exit(main())
