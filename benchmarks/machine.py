"""What bounds this machine: GEMM FLOP/s (torch, fp32 and bf16) and memory bandwidth.

Items that miss a target compare the work they need with these numbers:

* ``gemm_flops`` — a square matmul (compute-bound peak) and a decode-shaped one (a few rows
  times a weight matrix, what a small batch of generation steps does), in FLOP/s;
* ``bandwidth`` — bytes moved per second by a numpy copy of a large array (read + write,
  one thread) and by torch's multi-threaded copy; the larger is the machine's figure;
* ``gguf_weight_bytes`` — bytes of weights a llama.cpp decode step reads from a GGUF (every
  tensor but the input embedding table, which is only gathered row by row; a model that ties
  its output to that table reads it in full for the output projection).
"""

from __future__ import annotations

import time
from pathlib import Path


def _best(fn, reps: int) -> float:
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def gemm_flops(dtype: str = "float32", n: int = 2048, m: int | None = None, k: int | None = None,
               reps: int = 5) -> float:
    """FLOP/s of ``(m x k) @ (k x n)`` (square ``n`` when m, k are None), best of ``reps``."""
    import torch

    dt = {"float32": torch.float32, "bfloat16": torch.bfloat16}[dtype]
    m = m or n
    k = k or n
    a = torch.randn(m, k, dtype=dt)
    b = torch.randn(k, n, dtype=dt)
    torch.matmul(a, b)  # warm-up (oneDNN picks its kernel)
    inner = max(1, int(2e9 // (2 * m * n * k)))  # ~1 GFLOP per timing at least
    t = _best(lambda: [torch.matmul(a, b) for _ in range(inner)], reps)
    return 2.0 * m * n * k * inner / t


def bandwidth(mib: int = 512, reps: int = 3) -> dict[str, float]:
    """Bytes/s of a large copy: numpy (one thread) and torch (all threads); read + write."""
    import numpy as np
    import torch

    n = mib * 1024 * 1024 // 8
    src = np.ones(n, dtype=np.float64)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    t_np = _best(lambda: np.copyto(dst, src), reps)
    ts, td = torch.from_numpy(src), torch.from_numpy(dst)
    td.copy_(ts)
    t_torch = _best(lambda: td.copy_(ts), reps)
    moved = 2.0 * src.nbytes
    out = {"numpy_copy": moved / t_np, "torch_copy": moved / t_torch}
    out["best"] = max(out.values())
    return out


def gguf_weight_bytes(path: str | Path) -> dict[str, float]:
    """Bytes of tensors a decode step reads, from the GGUF's tensor table."""
    from gguf import GGUFReader

    reader = GGUFReader(str(path))
    sizes = {t.name: int(t.n_bytes) for t in reader.tensors}
    total = sum(sizes.values())
    embd = sizes.get("token_embd.weight", 0)
    tied = "output.weight" not in sizes
    per_token = total if tied else total - embd
    return {"file_bytes": Path(path).stat().st_size, "tensor_bytes": total, "embedding_bytes": embd,
            "tied_output": tied, "bytes_per_token": per_token}


def summary(quick: bool = False) -> dict[str, float]:
    """The figures items quote in their bounds (a few seconds)."""
    import torch

    out = {
        "threads": torch.get_num_threads(),
        "gemm_fp32_flops": gemm_flops("float32", 1024 if quick else 2048),
        "gemm_bf16_flops": gemm_flops("bfloat16", 1024 if quick else 2048),
        # SmolLM2-135M decode step for 32 rows: [32 x 576] @ [576 x 1536] (its MLP up-projection)
        "gemm_fp32_decode_flops": gemm_flops("float32", n=1536, m=32, k=576),
        "gemm_bf16_decode_flops": gemm_flops("bfloat16", n=1536, m=32, k=576),
    }
    out.update({f"bandwidth_{k}": v for k, v in bandwidth(256 if quick else 512).items()})
    return out


def describe(m: dict[str, float]) -> str:
    return (f"GEMM {m['gemm_fp32_flops'] / 1e9:.0f} GFLOP/s fp32, {m['gemm_bf16_flops'] / 1e9:.0f} GFLOP/s bf16 "
            f"(square); decode-shaped 32x576x1536: {m['gemm_fp32_decode_flops'] / 1e9:.0f} fp32, "
            f"{m['gemm_bf16_decode_flops'] / 1e9:.0f} bf16; memory bandwidth {m['bandwidth_best'] / 1e9:.1f} GB/s "
            f"(numpy copy {m['bandwidth_numpy_copy'] / 1e9:.1f}, torch copy {m['bandwidth_torch_copy'] / 1e9:.1f}; "
            f"read + write); {m['threads']} torch threads")


if __name__ == "__main__":
    import json

    print(json.dumps(summary(), indent=1))
