"""Endpoint profiles: what runs measured on one endpoint and model, kept between runs.

One JSON file per endpoint and model under ``$CHAINRAY_HOME/profiles`` (default
``~/.chainray/profiles``). It holds numbers only: no API key (the endpoint is stored without
user, password, query or fragment), no prompt or reply text. Its size is bounded (the newest
``MAX_SAMPLES`` requests, ``MAX_STEPS`` steps, each running figure weighted as at most
``MAX_WEIGHT`` observations so it follows the endpoint as it changes). It is written
atomically (a temporary file, then ``os.replace``) under a lock held around read-merge-write,
so several drivers may learn at once; an unreadable file is reported in one line and replaced.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import urllib.parse
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, ValidationError

from chainray.home import chainray_home

__all__ = ["Acc", "StepEntry", "Profile", "profiles_dir", "endpoint_label", "default_endpoint",
           "load_profile", "update_profile", "known_profiles", "SIMULATOR", "OPENAI_URL"]

SIMULATOR = "embedded simulator"
OPENAI_URL = "https://api.openai.com/v1"
MAX_SAMPLES = 400
MAX_STEPS = 300
MAX_WEIGHT = 50
VERSION = 1
# What the embedded simulator is like: a profile it wrote under another generation describes a
# simulator that no longer exists (2: a reply token became ~4 characters, not a whole word).
SIMULATOR_GENERATION = 2


class Acc(BaseModel):
    """A running mean and variance (Welford), its weight capped at ``MAX_WEIGHT``."""

    model_config = ConfigDict(extra="forbid")

    n: int = 0
    mean: float = 0.0
    m2: float = 0.0

    def add(self, x: float) -> None:
        if self.n >= MAX_WEIGHT:  # forget the oldest share in proportion
            self.m2 *= (MAX_WEIGHT - 1) / self.n
            self.n = MAX_WEIGHT - 1
        self.n += 1
        delta = x - self.mean
        self.mean += delta / self.n
        self.m2 += delta * (x - self.mean)

    @property
    def sd(self) -> float:
        return (self.m2 / (self.n - 1)) ** 0.5 if self.n > 1 else 0.0


class StepEntry(BaseModel):
    """One step of one chain: its reply tokens per strategy ("*": any), how often it was cut
    at ``max_tokens``, and when it was last seen (the profile's run count)."""

    model_config = ConfigDict(extra="forbid")

    tokens: dict[str, Acc] = {}
    chars: dict[str, Acc] = {}  # characters of its output per strategy (python steps: what
    # they returned, which depends on what the strategy let them see)
    max_tokens: int = 0
    truncated: int = 0
    last: int = 0


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    version: int = VERSION
    endpoint: str
    model: str
    simulator: int | None = None  # SIMULATOR_GENERATION of the simulator it measured
    runs: int = 0
    requests: int = 0
    truncations: int = 0
    samples: list[tuple[float, float, float, float | None, float]] = []  # see fit.Sample
    steps: dict[str, StepEntry] = {}  # "chain/step"
    reply_tokens: Acc = Acc()  # replies not cut at max_tokens, any step
    reply_share: Acc = Acc()  # the same as a share of their max_tokens
    max_tokens_seen: list[int] = []
    chars_per_token: Acc = Acc()
    prompt_tokens: float = 0.0  # the server's count of prompts chainray estimated ...
    prompt_estimate: float = 0.0  # ... at this many tokens (both halved past 10M: bounded)
    dispatch_s: Acc = Acc()  # a run's time beyond its steps', per step on its critical path
    ttft_s: Acc = Acc()  # streamed time to first token (its distribution: mean and sd)

    def bound(self) -> Profile:
        """Drop what exceeds the size bounds (oldest samples, least recently seen steps)."""
        self.samples = self.samples[-MAX_SAMPLES:]
        self.max_tokens_seen = sorted(set(self.max_tokens_seen))[-20:]
        if len(self.steps) > MAX_STEPS:
            keep = sorted(self.steps, key=lambda k: self.steps[k].last)[-MAX_STEPS:]
            self.steps = {k: self.steps[k] for k in keep}
        return self


def profiles_dir() -> Path:
    return chainray_home() / "profiles"


def endpoint_label(base_url: str | None, *, simulated: bool = False, sim_speed: float = 1.0,
                   sim_flags: tuple[str, ...] = ()) -> str:
    """The name an endpoint's profile goes by: its URL without credentials, query or trailing
    slash, or ``embedded simulator`` (with its speed and flags, which change its latency)."""
    if simulated:
        flags = [f for f in sim_flags if "key" not in f.lower()]
        return " ".join([SIMULATOR, *([f"--speed {sim_speed:g}"] if sim_speed != 1 else []),
                         *flags])
    parts = urllib.parse.urlsplit(base_url or OPENAI_URL)
    host = parts.hostname or ""
    netloc = f"{host}:{parts.port}" if parts.port else host
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path.rstrip("/"), "", ""))


def default_endpoint(env: Mapping[str, str]) -> str:
    """The endpoint ``chainray run`` would call with no ``--base-url``, as a profile label."""
    if env.get("OPENAI_BASE_URL"):
        return endpoint_label(env["OPENAI_BASE_URL"])
    return endpoint_label(OPENAI_URL) if env.get("OPENAI_API_KEY") else SIMULATOR


def _path(label: str, model: str) -> Path:
    digest = hashlib.sha256(f"{label}\n{model}".encode()).hexdigest()[:10]
    readable = re.sub(r"[^A-Za-z0-9._-]+", "_", f"{label}_{model}").strip("_")[:80]
    return profiles_dir() / f"{readable}-{digest}.json"


def _current(profile: Profile) -> bool:
    return not profile.endpoint.startswith(SIMULATOR) or \
        profile.simulator == SIMULATOR_GENERATION


def _read(path: Path) -> tuple[Profile | None, str | None]:
    """The profile at ``path`` (None if absent, or if it measured an earlier simulator) and,
    if it is unreadable, why in one line."""
    try:
        profile = Profile.model_validate_json(path.read_bytes())
        return (profile if _current(profile) else None), None
    except FileNotFoundError:
        return None, None
    except (OSError, ValueError, ValidationError) as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return None, f"profile {path} is unreadable ({first[:120]})"


def load_profile(label: str, model: str) -> tuple[Profile | None, str | None]:
    """The stored profile of ``label`` and ``model`` (or None) and a one-line problem."""
    return _read(_path(label, model))


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "a+b") as handle:
        try:
            import fcntl
        except ImportError:  # not POSIX: one writer at a time is the caller's affair
            yield
            return
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def update_profile(label: str, model: str, merge: Callable[[Profile], None]) -> str | None:
    """Read, ``merge`` into and write back the profile, under its lock; returns a one-line
    note if the old file was unreadable (it is replaced)."""
    path = _path(label, model)
    with _locked(path):
        profile, problem = _read(path)
        if profile is None or (profile.endpoint, profile.model) != (label, model):
            profile = Profile(endpoint=label, model=model, simulator=SIMULATOR_GENERATION
                              if label.startswith(SIMULATOR) else None)
        merge(profile)
        text = profile.bound().model_dump_json()
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".profile-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as out:
                out.write(text)
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise
    return f"{problem}: replaced" if problem else None


def known_profiles() -> list[tuple[str, str, int]]:
    """Every readable, current stored profile: (endpoint, model, requests)."""
    profiles = (_read(path)[0] for path in sorted(profiles_dir().glob("*.json")))
    return [(p.endpoint, p.model, p.requests) for p in profiles if p is not None]
