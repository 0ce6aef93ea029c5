"""``python -m cerm`` is the same as the ``cerm`` command."""

import sys

from cerm.cli import main

sys.exit(main())
