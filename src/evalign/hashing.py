"""Content hashes: every cache key, template version and fingerprint is built here.

All are sha256; the helpers differ only in what they hash (text, canonical JSON, parts joined
by a separator, a file) and how much of the digest they keep. Their values are part of every
run directory's keys, so a change here invalidates caches: keep them stable.
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any


def sha(text: str, length: int = 24) -> str:
    """Hex sha256 of a text, cut to ``length``."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:length]


def key_of(*parts: Any) -> str:
    """Content key of a unit of work: sha256 over the canonical JSON of its parts (32 hex)."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:32]


def stable_hash(obj: Any, length: int = 16) -> str:
    """sha256 of a canonical JSON rendering; equal inputs give equal keys across runs."""
    blob = json.dumps(obj, sort_keys=True, ensure_ascii=False, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def seed_of(*parts: object, sep: str = "\x1f") -> int:
    """A 63-bit integer that is a pure function of its parts (for derived seeds)."""
    digest = hashlib.sha256(sep.join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 22) -> str:
    """Hex sha256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()
