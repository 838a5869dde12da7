"""``python -m gafkd``: the gafkd command line."""

import sys

from gafkd.cli import main

sys.exit(main())
