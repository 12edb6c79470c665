"""`python -m scip`: the same as the `scip` command."""

import sys

from scip.cli import main

sys.exit(main())
