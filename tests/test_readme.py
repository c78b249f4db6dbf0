"""The README's Python section is executed as written, against the embedded simulator."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_section_code() -> str:
    text = README.read_text(encoding="utf-8")
    section = text.split("\n## Python\n", 1)[1].split("\n## ", 1)[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.S)
    assert len(blocks) == 1, "the Python section holds one python block"
    return blocks[0]


def test_readme_python_section_runs_as_written(ray_session, capsys):
    code = _python_section_code()
    namespace = {"__name__": "readme"}
    exec(compile(code, str(README), "exec"), namespace)  # noqa: S102 - our own README
    # Only the block's own lines: Ray's raylet may print warnings to the same stdout.
    printed = [line for line in capsys.readouterr().out.splitlines() if "(raylet)" not in line]
    assert printed[0].startswith("ok ")
    assert printed[1].startswith("Fastest: ") and "failed" not in printed[1]  # every run ok
    counts = eval(printed[-1])  # noqa: S307 - the list of word counts it printed
    assert len(counts) == 3 and all(c.isdigit() and int(c) > 0 for c in counts)
    assert namespace["advice"].strategy in ("sequential", "parallel", "hybrid")


def test_public_docstring_examples_run(ray_session):
    """The examples in the public API's docstrings are doctests, run here."""
    import doctest
    import importlib

    for name in ("chainray", "chainray.api.planning", "chainray.api.library",
                 "chainray.spec.bundled", "chainray.spec.chain"):
        module = importlib.import_module(name)
        outcome = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
        assert outcome.failed == 0, name
        assert outcome.attempted > 0, name
