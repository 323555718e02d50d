"""`python -m tinylm.cli ...` (how torchrun starts tinylm on every process)."""

import sys

from .main import main

sys.exit(main())
