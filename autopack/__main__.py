"""`python -m autopack` runs the same command line as the `autopack` script."""

import sys

from autopack.cli.app import main

sys.exit(main())
