"""``python -m backupcheck``: the same command as ``backupcheck``."""

from __future__ import annotations

import sys

from .cli import main

sys.exit(main())
