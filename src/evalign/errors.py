"""User-facing errors.

An :class:`EvalignError` is something the user caused and can fix (a config key, an input
file, a missing model). The CLI prints it as one line, without a traceback; anything else
is a bug and keeps its traceback.
"""

from __future__ import annotations


class EvalignError(Exception):
    """A problem the user can fix; the message names the thing and the fix."""


class ConfigError(EvalignError):
    """The run configuration is invalid."""


class InputError(EvalignError):
    """An input file (prompts, answers, judgments) is invalid."""


class ModelNotFoundError(EvalignError):
    """A model name is neither built-in, a local directory nor a hub id that can be loaded."""


class RunInUseError(EvalignError):
    """Another process holds the run directory."""


class BudgetExceededError(EvalignError):
    """An API budget (calls, tokens or cost) would be exceeded; raise it to continue."""


class BackendError(EvalignError):
    """A backend failed in a way retries could not fix (bad API key, model not served)."""
