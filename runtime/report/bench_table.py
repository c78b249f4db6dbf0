"""A bench printed for a person: the seed's table of strategies side by side, then verdicts."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from chainray.report.bench import StrategySummary, summarize_bench, verdicts
from chainray.results import RunResult

__all__ = ["print_bench"]

_COLUMNS = ("Strategy", "Latency", "Tokens", "Calls", "Retries", "429s", "Queued", "Cost",
            "Output", "Redundancy")


def _range(median: float, low: float, high: float, fmt: str, runs: int) -> str:
    text = fmt.format(median)
    if runs > 1 and high > low:
        text += f" ({fmt.format(low)}-{fmt.format(high)})"
    return text


def _cells(row: StrategySummary) -> list[str]:
    """A strategy's row; one whose runs all failed shows what it spent, not a latency or an
    output that would read as a result."""
    ok = row.runs - row.failed
    name = row.strategy + (f" ({row.failed} of {row.runs} failed)" if row.failed else "")
    latency = _range(row.latency_ms / 1000, row.latency_min_ms / 1000,
                     row.latency_max_ms / 1000, "{:.2f}s", ok) if ok else "failed"
    output = _range(row.output_length, row.output_length_min, row.output_length_max,
                    "{:.0f}", ok) + " chars" if ok else "-"
    return [name, latency,
            _range(row.total_tokens, row.total_tokens_min, row.total_tokens_max, "{:.0f}",
                   ok or row.runs) + (f", {row.cached_tokens:.0f} cached" if row.cached_tokens
                                      else ""),
            f"{row.api_calls:.0f}", f"{row.retries:.0f}", f"{row.rate_limited:.0f}",
            f"{row.queued_ms / 1000:.2f}s",
            f"${row.estimated_cost:.5f}", output,
            f"{row.redundancy:.0%}" if ok else "-"]


def print_bench(scenario: str, results: list[RunResult], console: Console | None = None) -> None:
    """The seed's table (Strategy, Latency, Tokens, Calls, Cost, Output) plus retries, 429s,
    time queued for permits and redundancy between sibling outputs; then the verdicts."""
    if console is None:
        console = Console()
        if not console.is_terminal:  # a file or pipe: do not squeeze the table into 80 columns
            console = Console(width=160)
    rows = summarize_bench(results)
    repeats = max(row.runs for row in rows)
    title = f"{scenario}: " + (f"medians of {repeats} runs (min-max), ok runs only"
                               if repeats > 1 else "one run each")
    table = Table(title=title)
    for column in _COLUMNS:
        table.add_column(column, justify="left" if column == "Strategy" else "right")
    for row in rows:
        table.add_row(*_cells(row))
    console.print(table)
    for line in verdicts(rows):
        console.print(line, highlight=False)
    console.print("Strategies ran one after another, never sharing the rate-limit budget. "
                  "Queued: time steps waited for rate-limit permits. Redundancy: share of "
                  "3-word phrases a sibling output repeats from another.", style="dim")
