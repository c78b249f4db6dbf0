"""Results printed for a person: one run's steps and totals."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from chainray.report.bench import summarize_bench, verdicts
from chainray.results import RunResult

__all__ = ["print_run", "print_bench"]


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


def print_bench(scenario: str, results: list[RunResult], console: Console | None = None) -> None:
    """The seed's table: Strategy, Latency, Tokens, Calls, Cost, Output; then the verdicts."""
    console = console or Console()
    rows = summarize_bench(results)
    repeats = max(row.runs for row in rows)
    title = f"{scenario}: " + (f"medians of {repeats} runs" if repeats > 1 else "one run each")
    table = Table(title=title)
    for column in ("Strategy", "Latency", "Tokens", "Calls", "Cost", "Output"):
        table.add_column(column, justify="left" if column == "Strategy" else "right")
    for row in rows:
        latency = f"{row.latency_ms / 1000:.2f}s"
        if row.runs > 1:
            latency += f" ({row.latency_min_ms / 1000:.2f}-{row.latency_max_ms / 1000:.2f})"
        name = row.strategy + (f" ({row.failed} failed)" if row.failed else "")
        table.add_row(name, latency, f"{row.total_tokens:.0f}", f"{row.api_calls:.0f}",
                      f"${row.estimated_cost:.5f}", f"{row.output_length:.0f} chars")
    console.print(table)
    for line in verdicts(rows):
        console.print(line, highlight=False)
    console.print("Strategies ran one after another, never sharing the rate-limit budget.",
                  style="dim")
