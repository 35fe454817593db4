"""Entry point of ``python -m activeit``."""

import sys

from activeit.cli import main
from activeit.models.processes import distributed_initialized, exit_without_teardown

code = main()
if distributed_initialized():  # one process of `accelerate launch -m activeit ...`
    exit_without_teardown(code)
sys.exit(code)
