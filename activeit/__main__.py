"""Entry point of ``python -m activeit``."""

import sys

from activeit.cli import main

sys.exit(main())
