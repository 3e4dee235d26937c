"""Named choices, registered once where they are defined.

A metric, sampler, operator, loss, reward kind, judge variant or backend is registered by the
module that implements it (``@METRICS.register("gap")``); the config validates its fields
against these registries, so adding one is a single edit in a single file. A registry knows
the module that fills it (``home``) and imports it on first use, which keeps this module at
the bottom of the package: it imports nothing of evalign.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any, Generic, TypeVar

T = TypeVar("T")


class Registry(Generic[T]):
    """An ordered name → object map, filled by ``home`` (a module path) on first use."""

    def __init__(self, what: str, home: str) -> None:
        self.what = what
        self.home = home
        self._items: dict[str, T] = {}
        self._loading = False

    def register(self, name: str, obj: T | None = None) -> Any:
        """``REG.register("x", obj)``, or ``@REG.register("x")`` as a decorator."""
        if obj is not None:
            self._add(name, obj)
            return obj

        def deco(fn: T) -> T:
            self._add(name, fn)
            return fn

        return deco

    def _add(self, name: str, obj: T) -> None:
        if name in self._items and self._items[name] is not obj:
            raise ValueError(f"{self.what} {name!r} is registered twice")
        self._items[name] = obj

    def _load(self) -> dict[str, T]:
        if not self._items and not self._loading:
            self._loading = True
            try:
                importlib.import_module(self.home)
            finally:
                self._loading = False
        return self._items

    def names(self) -> tuple[str, ...]:
        return tuple(self._load())

    def get(self, name: str) -> T:
        items = self._load()
        if name not in items:
            raise ValueError(f"unknown {self.what} {name!r}; choose one of: {', '.join(items)}")
        return items[name]

    def __contains__(self, name: object) -> bool:
        return name in self._load()

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __len__(self) -> int:
        return len(self._load())

    def items(self):
        return self._load().items()

    def values(self):
        return self._load().values()

    def __getitem__(self, name: str) -> T:
        return self.get(name)


METRICS: Registry[Any] = Registry("informativeness metric", "evalign.creator.informativeness")
SAMPLERS: Registry[Any] = Registry("sampler", "evalign.creator.sampling")
OPERATORS: Registry[Any] = Registry("evolving operator", "evalign.creator.operators")
LOSSES: Registry[Any] = Registry("preference loss", "evalign.solver.losses")
REWARD_KINDS: Registry[Any] = Registry("reward kind", "evalign.judge.reward")
JUDGE_VARIANTS: Registry[Any] = Registry("judge variant", "evalign.judge.variants")
BACKENDS: Registry[Any] = Registry("backend", "evalign.backends.registry")
