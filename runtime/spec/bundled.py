"""The scenarios bundled with chainray (``chainray.scenarios``), by name."""

from __future__ import annotations

from chainray.spec.chain import SCENARIO_DIR

__all__ = ["bundled_scenarios"]


def bundled_scenarios() -> list[str]:
    """Names ``load_chain`` and ``chainray run`` accept, sorted.

        >>> import chainray
        >>> "quantum_research" in chainray.bundled_scenarios()
        True
    """
    return sorted(path.stem for path in SCENARIO_DIR.glob("*.yaml"))
