"""Faults of this package, told as sentences where a check would otherwise end in a traceback."""

from __future__ import annotations

import traceback
from pathlib import Path


def internal_fault(exc: BaseException) -> str:
    """A sentence for an exception this package did not expect: where it came from, and that it is ours."""
    frames = traceback.extract_tb(exc.__traceback__)
    where = next((f"{Path(f.filename).name}:{f.lineno}" for f in reversed(frames)
                  if "backupcheck" in f.filename), "")
    return (f"backupcheck met an error of its own ({type(exc).__name__}: {str(exc)[:300]}"
            f"{' at ' + where if where else ''}); this is a bug in backupcheck, not a verdict on the backup: "
            "please report it with the backup's format")
