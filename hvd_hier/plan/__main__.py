"""``python -m hvd_hier.plan``: see ``hvd_hier.plan.cli``."""

import sys

from hvd_hier.plan.cli import main

sys.exit(main())
