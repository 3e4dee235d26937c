"""Names that transformers removed but checkpoints' own (remote) code still imports.

transformers 4.52 replaced the per-model docstring constants by ``@auto_docstring``
(huggingface/transformers#33771), so ``LLAMA_INPUTS_DOCSTRING``, ``LLAMA_START_DOCSTRING``,
``_CONFIG_FOR_DOC`` and ``_CHECKPOINT_FOR_DOC`` no longer exist in any ``modeling_*`` module
of transformers 5, and ``modeling_llama`` no longer re-exports the docstring decorators.
Remote code written for 4.x imports them at module level; the paper's reward model,
RLHFlow/ArmoRM-Llama3-8B-v0.1, does (its ``modeling_custom.py``)::

    from transformers.models.llama.modeling_llama import LLAMA_INPUTS_DOCSTRING
    ...
    @add_start_docstrings_to_model_forward(LLAMA_INPUTS_DOCSTRING)

so under transformers 5 it fails with ImportError before a weight is read.

:func:`restore_removed_doc_names` puts those names back before remote code is imported.
It is deliberately narrow: only documentation names (a docstring text, a config class
name, a checkpoint name, the docstring decorators), which change nothing a model computes;
only where the attribute is missing, never replacing an existing one; and only in the
modules named. Names with behaviour (``LLAMA_ATTENTION_CLASSES``, the per-backend
attention classes) are not faked: code that needs them needs a real port.
"""

from __future__ import annotations

import importlib
import logging

log = logging.getLogger(__name__)

#: Decorators the modeling modules used to import (and so re-export) from transformers.utils.
DOC_DECORATORS = ("add_start_docstrings", "add_start_docstrings_to_model_forward",
                  "replace_return_docstrings", "add_code_sample_docstrings")

_PLACEHOLDER = "\n    (docstring removed from transformers; restored empty by evalign for remote code)\n"


def _identity_decorator(*_args, **_kwargs):
    def wrap(fn):
        return fn
    return wrap


def _modeling_module(model_type: str):
    name = model_type.replace("-", "_")
    try:
        return importlib.import_module(f"transformers.models.{name}.modeling_{name}")
    except ImportError:  # not a built-in model type, or its optional dependencies are missing
        return None


def _config_class_name(module, prefix: str) -> str:
    for attr in dir(module):
        if attr.endswith("Config") and attr.upper() == f"{prefix}CONFIG":
            return attr
    return "PretrainedConfig"


def restore_removed_doc_names(model_types: tuple[str, ...] | list[str] = ("llama",)) -> list[str]:
    """Add the removed docstring names to ``transformers.utils`` and to the modeling module of
    each model type (``llama`` -> ``transformers.models.llama.modeling_llama``: ``LLAMA_*``).

    Returns the names added (``module:name``), empty when nothing was missing. Idempotent."""
    import transformers.utils as tutils

    added: list[str] = []

    def put(module, name: str, value) -> None:
        if not hasattr(module, name):
            setattr(module, name, value)
            added.append(f"{module.__name__}:{name}")

    for name in DOC_DECORATORS:
        put(tutils, name, _identity_decorator)
    for model_type in dict.fromkeys(model_types):
        module = _modeling_module(model_type)
        if module is None:
            continue
        prefix = model_type.replace("-", "_").upper()
        put(module, f"{prefix}_INPUTS_DOCSTRING", _PLACEHOLDER)
        put(module, f"{prefix}_START_DOCSTRING", _PLACEHOLDER)
        put(module, "_CONFIG_FOR_DOC", _config_class_name(module, prefix.replace("_", "")))
        put(module, "_CHECKPOINT_FOR_DOC", "")
        for name in DOC_DECORATORS:
            put(module, name, getattr(tutils, name))
    if added:
        log.debug("restored removed transformers names for remote code: %s", ", ".join(added))
    return added
