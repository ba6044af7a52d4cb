"""``python -m soong_core`` runs the ``soong`` command line."""

import sys

from soong_core.cli.application import main

sys.exit(main())
