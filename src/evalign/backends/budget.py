"""A spending limit for paid API backends: calls, tokens and dollars.

Every request first *reserves* its worst case (one call, the prompt bound plus
``max_new_tokens`` tokens, and their price); the reservation fails with
:class:`~evalign.errors.BudgetExceededError` when spent + in flight + this worst case would
pass any limit, so concurrent requests can never overshoot together. When the response
arrives, :meth:`Budget.commit` replaces the reservation by the usage the server reported.

With a ``path`` the totals live in a JSON file (written atomically after every change) and
are reloaded on construction, so a resumed run keeps counting what it already spent. The
limits always come from the config, never from the file: raising ``budget.max_...`` and
rerunning continues where the run stopped. Reservations still in flight are written too and
count as spent when a killed run's file is reloaded (the server may have billed them).
"""

from __future__ import annotations

import json
import math
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evalign.errors import BudgetExceededError, ConfigError, InputError
from evalign.fsutil import atomic_write_bytes

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Reservation:
    """The worst case of one request, held until it is committed or released."""

    prompt_tokens: int
    completion_tokens: int
    cost_usd: float

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Budget:
    """Running totals and limits for one run's API calls; thread-safe.

    ``Budget(cfg.budget, path=run_dir / "api_budget.json")``. A limit left at ``None`` is not
    enforced (the totals are still kept). ``max_cost_usd`` needs both prices.
    """

    def __init__(self, config: Any = None, path: str | os.PathLike[str] | None = None) -> None:
        self.max_calls: int | None = getattr(config, "max_calls", None)
        self.max_tokens: int | None = getattr(config, "max_tokens", None)
        self.max_cost_usd: float | None = getattr(config, "max_cost_usd", None)
        self.price_in: float | None = getattr(config, "price_per_million_input", None)
        self.price_out: float | None = getattr(config, "price_per_million_output", None)
        if self.max_cost_usd is not None and (self.price_in is None or self.price_out is None):
            raise ConfigError(
                "budget.max_cost_usd needs budget.price_per_million_input and "
                "budget.price_per_million_output; set both prices (USD per million tokens)"
            )
        self.path = Path(path) if path is not None else None
        self._lock = threading.Lock()
        # settled totals
        self.calls = 0
        self.prompt_tokens = 0
        self.completion_tokens = 0
        self.cost_usd = 0.0
        # outstanding reservations
        self._open_calls = 0
        self._open_prompt = 0
        self._open_completion = 0
        self._open_cost = 0.0
        if self.path is not None and self.path.exists():
            self._load()

    # ------------------------------------------------------------------ accounting

    def cost_of(self, prompt_tokens: int, completion_tokens: int) -> float:
        """Price in USD of the given usage (0 without prices)."""
        return (prompt_tokens * (self.price_in or 0.0) + completion_tokens * (self.price_out or 0.0)) / 1e6

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def reserve(self, prompt_tokens_estimate: int, max_new_tokens: int) -> Reservation:
        """Hold the worst case of one request or raise BudgetExceededError (nothing held)."""
        p, c = max(0, int(prompt_tokens_estimate)), max(0, int(max_new_tokens))
        res = Reservation(p, c, self.cost_of(p, c))
        with self._lock:
            if self.max_calls is not None and self.calls + self._open_calls + 1 > self.max_calls:
                raise BudgetExceededError(
                    f"API budget: max_calls={self.max_calls} reached ({self.calls} calls spent, "
                    f"{self._open_calls} in flight); raise budget.max_calls in the config and rerun to resume"
                )
            used_tokens = self.tokens + self._open_prompt + self._open_completion
            if self.max_tokens is not None and used_tokens + res.tokens > self.max_tokens:
                raise BudgetExceededError(
                    f"API budget: max_tokens={self.max_tokens} would be exceeded ({self.tokens} tokens "
                    f"spent, {used_tokens - self.tokens} in flight, next call up to {res.tokens}); "
                    "raise budget.max_tokens in the config and rerun to resume"
                )
            used_cost = self.cost_usd + self._open_cost
            if self.max_cost_usd is not None and used_cost + res.cost_usd > self.max_cost_usd + 1e-12:
                raise BudgetExceededError(
                    f"API budget: max_cost_usd={self.max_cost_usd:g} would be exceeded "
                    f"(${self.cost_usd:.4f} spent, ${used_cost - self.cost_usd:.4f} in flight, next call "
                    f"up to ${res.cost_usd:.4f}); raise budget.max_cost_usd in the config and rerun to resume"
                )
            self._open_calls += 1
            self._open_prompt += res.prompt_tokens
            self._open_completion += res.completion_tokens
            self._open_cost += res.cost_usd
            self._save()
        return res

    def commit(
        self, reservation: Reservation, prompt_tokens: int | None = None, completion_tokens: int | None = None
    ) -> None:
        """Settle a reservation with the usage the server reported.

        A count left at ``None`` (usage unknown: a timeout, a dropped connection, a response
        without ``usage``) is charged at the reservation's worst case.
        """
        p = reservation.prompt_tokens if prompt_tokens is None else max(0, int(prompt_tokens))
        c = reservation.completion_tokens if completion_tokens is None else max(0, int(completion_tokens))
        with self._lock:
            self._drop(reservation)
            self.calls += 1
            self.prompt_tokens += p
            self.completion_tokens += c
            self.cost_usd += self.cost_of(p, c)
            self._save()

    def release(self, reservation: Reservation) -> None:
        """Drop a reservation whose request never reached the server (nothing spent)."""
        with self._lock:
            self._drop(reservation)
            self._save()

    def _drop(self, r: Reservation) -> None:
        self._open_calls = max(0, self._open_calls - 1)
        self._open_prompt = max(0, self._open_prompt - r.prompt_tokens)
        self._open_completion = max(0, self._open_completion - r.completion_tokens)
        self._open_cost = max(0.0, self._open_cost - r.cost_usd)

    def snapshot(self) -> dict[str, Any]:
        """Settled totals, what is in flight, and the limits."""
        with self._lock:
            return {
                "calls": self.calls,
                "prompt_tokens": self.prompt_tokens,
                "completion_tokens": self.completion_tokens,
                "cost_usd": round(self.cost_usd, 6),
                "in_flight_calls": self._open_calls,
                "limits": {
                    "max_calls": self.max_calls,
                    "max_tokens": self.max_tokens,
                    "max_cost_usd": self.max_cost_usd,
                },
            }

    def __repr__(self) -> str:
        return (
            f"Budget(calls={self.calls}/{self.max_calls}, tokens={self.tokens}/{self.max_tokens}, "
            f"cost_usd={self.cost_usd:.4f}/{self.max_cost_usd})"
        )

    # ------------------------------------------------------------------ persistence

    def _save(self) -> None:
        """Write the totals atomically (a reader sees the old file or the new one)."""
        if self.path is None:
            return
        data = {
            "version": FORMAT_VERSION,
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost_usd": self.cost_usd,
            "in_flight": {
                "calls": self._open_calls,
                "prompt_tokens": self._open_prompt,
                "completion_tokens": self._open_completion,
                "cost_usd": self._open_cost,
            },
        }
        atomic_write_bytes(self.path, json.dumps(data, indent=1).encode("utf-8"), mode=0o600)

    def _load(self) -> None:
        assert self.path is not None
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            calls = int(data["calls"])
            prompt = int(data["prompt_tokens"])
            completion = int(data["completion_tokens"])
            cost = float(data["cost_usd"])
            fl = data.get("in_flight") or {}
            # Requests in flight when the last run stopped may have been billed: count them.
            calls += int(fl.get("calls", 0))
            prompt += int(fl.get("prompt_tokens", 0))
            completion += int(fl.get("completion_tokens", 0))
            cost += float(fl.get("cost_usd", 0.0))
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise InputError(
                f"{self.path}: unreadable API budget file ({type(exc).__name__}); "
                "fix or delete it (deleting forgets what was already spent)"
            ) from None
        if min(calls, prompt, completion) < 0 or not math.isfinite(cost) or cost < 0:
            raise InputError(f"{self.path}: API budget file holds negative totals; fix or delete it")
        self.calls, self.prompt_tokens, self.completion_tokens, self.cost_usd = calls, prompt, completion, cost
        self._save()  # fold in-flight into the settled totals on disk too
