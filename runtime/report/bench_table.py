"""A bench printed for a person: the seed's table of strategies side by side, then verdicts."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from chainray.report.bench import summarize_bench, verdicts
from chainray.results import RunResult

__all__ = ["print_bench"]


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
