"""``python -m imds_simulator``: same as the ``imds-simulator`` launcher."""

import sys

from .cli import main

sys.exit(main())
