"""Where chainray keeps what outlives a process: ``$CHAINRAY_HOME``, else ``~/.chainray``."""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["chainray_home"]


def chainray_home() -> Path:
    """The folder for run journals, the response cache, endpoint profiles and budget locks."""
    return Path(os.environ.get("CHAINRAY_HOME") or Path.home() / ".chainray")
