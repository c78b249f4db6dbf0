"""An MkDocs hook that lets mkdocstrings read ``chainray`` from ``runtime/``.

The package is installed from ``runtime/`` (pyproject's ``package-dir``), so no folder is named
``chainray``. When MkDocs runs as ``.venv/bin/mkdocs``, the script's folder is first on
``sys.path`` and holds the console script ``chainray``, which griffe would take for the package
and find nothing in. Without that folder griffe finds no ``chainray`` on disk, imports it, and
reads the sources where the import system found them (``runtime/``), statically as usual.
"""

from __future__ import annotations

import sys
from pathlib import Path


def on_startup(command: str, dirty: bool) -> None:
    sys.path[:] = [entry for entry in sys.path if not Path(entry or ".", "chainray").is_file()]
