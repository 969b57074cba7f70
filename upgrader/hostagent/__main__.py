"""``python3 -m upgrader.hostagent``: the agent from a checkout (hosts run the zip application instead)."""

import sys

from .main import main

sys.exit(main())
