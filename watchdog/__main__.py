"""`python -m watchdog` is the `watchdog` command."""

import sys

from watchdog.cli import main

sys.exit(main())
