"""``python -m nvbayes.cli``."""

import sys

from nvbayes.cli import main

sys.exit(main())
