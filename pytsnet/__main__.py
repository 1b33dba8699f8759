"""Entry point for ``python -m pytsnet``."""

import sys

from pytsnet.cli import main

sys.exit(main())
