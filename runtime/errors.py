"""chainray's error tree.

    ChainrayError
     ├ SpecError          a chain file or chain model is invalid (file, step, field)
     ├ InputError         bad command-line input: --set, --inputs, limits, unknown scenario
     ├ EndpointError      an HTTP call to the LLM endpoint failed (status, code, retry_after)
     │                    EndpointError(message, status=429, code="rate_limit_exceeded",
     │                                  retry_after=2.0, retryable=True)
     ├ PermitRefused      the RateLimiter can never grant a request of this size
     │ └ Interrupted      the run is stopping (Ctrl-C, SIGTERM): no new request is sent
     └ StepError          a step failed after its retries (step id, cause)

Every error survives pickling across Ray (openai's own exceptions do not: they require a
response object to rebuild): positional fields stay in ``args``, keyword-only
fields in the instance ``__dict__``, which ``BaseException`` pickles and restores.

A failure's *meaning* for the user (``StepResult.error_code``: ``spend_cap``, ``timeout``,
``auth``, ...) is decided in one table, ``chainray.call.error_table.error_code``; no logic
reads an error's message.
"""

from __future__ import annotations

__all__ = [
    "ChainrayError",
    "SpecError",
    "InputError",
    "EndpointError",
    "PermitRefused",
    "Interrupted",
    "StepError",
]


class ChainrayError(Exception):
    """Base of every error chainray raises on purpose."""


class SpecError(ChainrayError):
    """A chain is invalid; names where (file, step, field) and what to do.

    ``problems`` holds every problem found (the first one's fields are this error's own), so
    one report lists them all: ``SpecError.collect([...])`` builds it.
    """

    def __init__(
        self, message: str, file: str | None = None, step: str | None = None,
        field: str | None = None, problems: tuple[SpecError, ...] = (),
    ) -> None:
        super().__init__(message, file, step, field, tuple(problems))
        self.message, self.file, self.step, self.field = message, file, step, field
        self.problems: tuple[SpecError, ...] = tuple(problems) or (self,)

    @classmethod
    def collect(cls, problems: list[SpecError]) -> SpecError:
        """One error reporting ``problems`` (at least one), duplicates dropped, order kept."""
        unique = list({(p.file, p.step, p.field, p.message): p for p in problems}.values())
        if len(unique) == 1:
            return unique[0]
        first = unique[0]
        return cls(first.message, first.file, first.step, first.field, tuple(unique))

    def _where(self, with_file: bool = True) -> str:
        return ", ".join(f"{name} {value!r}" for name, value in
                         (("file", self.file if with_file else None), ("step", self.step),
                          ("field", self.field)) if value)

    def __str__(self) -> str:
        if len(self.problems) > 1:
            files = {p.file for p in self.problems}
            same_file = len(files) == 1 and None not in files
            head = f"file {self.file!r}: " if same_file else ""
            lines = [f"  - {p._where(not same_file) or 'chain'}: {p.message}"
                     for p in self.problems]
            return f"{head}{len(self.problems)} problems:\n" + "\n".join(lines)
        where = self._where()
        return f"{where}: {self.message}" if where else self.message


class InputError(ChainrayError):
    """Bad input given on the command line (nothing was sent anywhere)."""


class EndpointError(ChainrayError):
    """An LLM endpoint answered with an error, or could not be reached.

    ``status`` is the HTTP status (None for connection errors and timeouts); ``code``,
    ``type`` and ``param`` come from OpenAI's error body or name chainray's own reason
    (``timeout``, ``connect_failed``, ``malformed_reply``, ``spend_cap``, ...);
    ``retry_after`` is in seconds. Every field but the message is a keyword.
    """

    def __init__(
        self, message: str, *, status: int | None = None, code: str | None = None,
        type: str | None = None, param: str | None = None, retry_after: float | None = None,
        retryable: bool = False,
    ) -> None:
        super().__init__(message)
        self.message, self.status, self.code, self.type = message, status, code, type
        self.param, self.retry_after, self.retryable = param, retry_after, retryable

    def __str__(self) -> str:
        status = f"HTTP {self.status}" if self.status else "no response"
        code = f" ({self.code})" if self.code else ""
        return f"{status}{code}: {self.message}"


class PermitRefused(ChainrayError):
    """A request is larger than the rate limit can ever admit; it is not retried."""


class Interrupted(PermitRefused):
    """The run is stopping (Ctrl-C or SIGTERM): this request was not sent; a resume sends it."""

    def __init__(self, message: str = "not sent: the run was interrupted; --resume sends it"
                 ) -> None:
        super().__init__(message)


class StepError(ChainrayError):
    """A step failed; ``cause`` is the last error's text."""

    def __init__(self, step: str, cause: str) -> None:
        super().__init__(step, cause)
        self.step, self.cause = step, cause

    def __str__(self) -> str:
        return f"step {self.step!r} failed: {self.cause}"
