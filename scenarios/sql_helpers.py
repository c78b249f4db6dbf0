"""Python steps of the sql_pipeline scenario: validate generated SQL and run it on SQLite.

A python step is called as ``function(inputs, upstream)`` and returns its text output.
``upstream`` holds the outputs the step sees under its strategy: under ``parallel`` a step
sees none, so each helper copes with a missing upstream output.
"""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path

__all__ = ["validate_sql", "run_query", "database_path"]

_SELECT = re.compile(r"(?is)\bselect\b.*?(?:;|$)")
_FALLBACK = ("SELECT c.name, ROUND(SUM(o.amount), 2) AS spent FROM customers c "
             "JOIN orders o ON o.customer_id = c.id GROUP BY c.id ORDER BY spent DESC LIMIT 3;")


def database_path() -> Path:
    return Path(__file__).with_name("data") / "shop.sqlite"


def _connect_read_only() -> sqlite3.Connection:
    return sqlite3.connect(f"file:{database_path()}?mode=ro", uri=True)


def _problem(sql: str) -> str | None:
    if not re.match(r"(?is)\s*select\b", sql):
        return "not a single SELECT statement"
    try:
        with _connect_read_only() as conn:
            conn.execute(f"EXPLAIN {sql}")
    except sqlite3.Error as exc:
        return str(exc)
    return None


def _sql_field(generated: str) -> str:
    """The ``sql`` field of a structured reply, or the text itself (a plain reply)."""
    try:
        reply = json.loads(generated)
    except ValueError:
        return generated
    return str(reply.get("sql", "")) if isinstance(reply, dict) else generated


def validate_sql(inputs: dict, upstream: dict) -> str:
    """Return ``SQL: <query>`` for a valid query; an invalid one is reported and replaced."""
    generated = _sql_field(upstream.get("generate", ""))
    match = _SELECT.search(generated)
    sql = match.group(0).strip() if match else ""
    problem = _problem(sql) if sql else "no SELECT statement in the generated text"
    if problem is None:
        return f"VALID\nSQL: {sql}"
    return f"INVALID ({problem}); replaced with a checked query\nSQL: {_FALLBACK}"


def run_query(inputs: dict, upstream: dict) -> str:
    checked = upstream.get("validate") or validate_sql(inputs, upstream)
    sql = checked.rsplit("SQL: ", 1)[-1].strip()
    if _problem(sql) is not None:
        raise ValueError(f"refusing to run an unvalidated query: {sql[:80]}")
    with _connect_read_only() as conn:
        cursor = conn.execute(sql)
        header = [d[0] for d in cursor.description]
        rows = cursor.fetchmany(50)
    return "\n".join([" | ".join(header)] + [" | ".join(map(str, row)) for row in rows])
