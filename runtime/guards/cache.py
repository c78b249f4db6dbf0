"""A content-addressed response cache: a rerun of the same request is answered from disk.

The key covers everything that shapes the answer: endpoint, model, messages and every
parameter sent (seed included); never the API key. Each entry is one JSON file written
atomically (a temporary file renamed into place), so a reader never sees half an entry, and
entries written by several processes or nodes at once simply agree.

    cache = ResponseCache(Path("~/.chainray/cache").expanduser())
    key = cache.key(base_url, {"model": "gpt-4o-mini", "messages": [...], "max_tokens": 400})
    if (hit := cache.get(key)) is None:
        ...                                   # send the request
        cache.put(key, CachedReply(text=..., prompt_tokens=..., completion_tokens=...))
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from chainray.home import chainray_home

__all__ = ["CachedReply", "ResponseCache", "cache_dir"]


def cache_dir() -> Path:
    return chainray_home() / "cache"


class CachedReply(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str | None = None
    model: str | None = None


class ResponseCache:
    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @staticmethod
    def key(base_url: str, request: dict[str, Any]) -> str:
        sent = {k: v for k, v in request.items() if k not in ("extra_headers", "timeout")}
        text = json.dumps({"endpoint": base_url.rstrip("/"), "request": sent}, sort_keys=True,
                          default=str)
        return hashlib.sha256(text.encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> CachedReply | None:
        try:
            return CachedReply.model_validate_json(self._path(key).read_bytes())
        except (OSError, ValidationError, ValueError):
            return None  # absent, or unreadable: a miss, and the next put repairs it

    def put(self, key: str, reply: CachedReply) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=".tmp-")
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as file:
                file.write(reply.model_dump_json())
            os.replace(temporary, path)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise

    def stats(self) -> dict[str, int]:
        files = list(self.directory.glob("??/*.json")) if self.directory.is_dir() else []
        return {"entries": len(files), "bytes": sum(f.stat().st_size for f in files)}

    def clear(self) -> int:
        files = list(self.directory.glob("??/*.json")) if self.directory.is_dir() else []
        for file in files:
            file.unlink(missing_ok=True)
        return len(files)
