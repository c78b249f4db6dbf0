"""One run printed for a person: its steps, totals and output.

Model text and error messages are data, not markup: every such string goes in as a
``rich.text.Text`` with escape sequences and control characters removed (``terminal_safe``),
so ``[/INST]`` prints as written and an escape code never reaches the terminal. The JSON
results keep the exact text.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from chainray.results import RunResult, StepResult
from chainray.text import one_line, terminal_safe

__all__ = ["print_run", "step_status"]


def step_status(step: StepResult) -> Text:
    """The status cell: status, marks (truncated, usage estimated) and the error's start."""
    marks = [mark for mark, on in (("truncated", step.truncated),
                                   ("usage estimated", step.usage_estimated)) if on]
    text = step.status + (f" ({', '.join(marks)})" if marks else "")
    if step.error:
        text += f": {one_line(step.error, 60)}"
    return Text(text, style="red" if step.status == "error" else "")


def print_run(result: RunResult, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=Text(f"{result.scenario} / {result.strategy} (run {result.run_id})"))
    for column in ("step", "status", "latency", "tokens in/out", "attempts", "429s"):
        table.add_column(column, justify="left" if column in ("step", "status") else "right")
    for step in sorted(result.steps, key=lambda s: s.started_at or float("inf")):
        table.add_row(Text(step.id), step_status(step), f"{step.latency_ms / 1000:.2f}s",
                      f"{step.prompt_tokens}/{step.completion_tokens}", str(step.attempts),
                      str(step.rate_limited))
    console.print(table)
    estimated = " (partly estimated)" if any(s.usage_estimated for s in result.steps) else ""
    console.print(Text(
        f"status {result.status}  latency {result.latency_ms / 1000:.2f}s "
        f"(critical path {result.critical_path_ms / 1000:.2f}s)"
        f"  tokens {result.total_tokens}{estimated}"
        + (f" ({result.cached_tokens} cached)" if result.cached_tokens else "")
        + f"  calls {result.api_calls}"
        f"  retries {result.retries}  429s {result.rate_limited}"
        f"  cost ${result.estimated_cost:.5f}"))
    if result.status != "ok":
        label = "run failed: " if result.status == "failed" else "some steps failed: "
        console.print(Text(label, style="bold red") + Text(one_line(result.error or "", 1000)))
    shown = terminal_safe(result.output[:400]) + ("..." if result.output_length > 400 else "")
    console.print(Text(f"output ({result.output_length} chars): ") + Text(shown))
