"""One run printed for a person: its steps, totals and output."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from chainray.results import RunResult

__all__ = ["print_run"]


def print_run(result: RunResult, console: Console | None = None) -> None:
    console = console or Console()
    table = Table(title=f"{result.scenario} / {result.strategy} (run {result.run_id})")
    for column in ("step", "status", "latency", "tokens in/out", "attempts", "429s"):
        table.add_column(column, justify="left" if column in ("step", "status") else "right")
    for step in sorted(result.steps, key=lambda s: s.started_at or float("inf")):
        table.add_row(step.id, step.status if not step.error else f"{step.status}: "
                      f"{step.error[:60]}", f"{step.latency_ms / 1000:.2f}s",
                      f"{step.prompt_tokens}/{step.completion_tokens}", str(step.attempts),
                      str(step.rate_limited))
    console.print(table)
    console.print(
        f"latency {result.latency_ms / 1000:.2f}s "
        f"(critical path {result.critical_path_ms / 1000:.2f}s)"
        f"  tokens {result.total_tokens}  calls {result.api_calls}  retries {result.retries}"
        f"  429s {result.rate_limited}  cost ${result.estimated_cost:.5f}", highlight=False)
    if result.status != "ok":
        console.print(f"[bold red]run failed:[/] {result.error}")
    console.print(f"output ({result.output_length} chars): {result.output[:400]}"
                  + ("..." if result.output_length > 400 else ""), highlight=False)
