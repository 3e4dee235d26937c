"""A padding-free, prefix-sharing forward pass for preference batches.

TRL's DPO batch holds every pair twice, prompt+chosen and prompt+rejected, right-padded to
the longest row of the batch, and off GPU its fused LM head scores every position, padding
and prompt included. On the built-in labeled pairs about a third of the positions are
padding and about half of the real ones repeat the prompt. This forward returns the same
per-token log-probabilities (and the metric fields TRL reads) from one packed pass:

* the two rows of a pair share their longest common token prefix (the prompt at least),
  computed once; the rejected continuation attends to it but not to the chosen one;
* pairs are packed side by side into rows as long as the longest pair (first-fit
  decreasing), with a block-diagonal 4D attention mask and per-token position ids, so few
  positions are padding;
* the LM head runs only on positions whose next-token label counts.

A causal LM's hidden state at a position depends only on the tokens up to it, so the packed
pass is exact up to floating-point summation order (tests/test_packing.py compares
log-probabilities and gradients with TRL's padded forward). Batches it cannot handle (left
padding, extra model inputs, a label on a padding position) and models it does not cover
(attention other than SDPA, scaled or soft-capped logits, mixture-of-experts) go through
TRL's forward unchanged.
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

log = logging.getLogger(__name__)

# The per-token fields TRL's DPOTrainer asks its fused LM head for (plus "log_sum_sq_probs"
# when it weights pairs, WPO).
DPO_OUTPUTS = ("log_probs", "entropy", "mean_logits", "is_top1")

SHARED, CHOSEN, REJECTED = 0, 1, 2


@dataclass
class PackPlan:
    """Where every real token of the padded batch lives in the packed one."""

    input_ids: object  # (rows, width) packed token ids
    position_ids: object  # (rows, width)
    attention_mask: object  # (rows, 1, width, width) bool, True = may attend
    source: object  # (batch, seq_len) flat index into rows*width, -1 for padding
    padded_positions: int  # positions of the padded batch
    packed_positions: int  # positions of the packed batch


def plan_batch(input_ids, attention_mask) -> PackPlan | None:
    """Pack a right-padded ``[chosen rows; rejected rows]`` batch, or None when it is not one."""
    import torch

    if input_ids is None or attention_mask is None or input_ids.dim() != 2 or attention_mask.shape != input_ids.shape:
        return None
    n, width = input_ids.shape
    if n == 0 or n % 2:
        return None
    lengths = attention_mask.sum(dim=1)
    arange = torch.arange(width, device=input_ids.device)
    if not torch.equal(attention_mask.bool(), arange[None, :] < lengths[:, None]):
        return None  # not right-padded
    b = n // 2
    same = (input_ids[:b] == input_ids[b:]) & (arange[None, :] < torch.minimum(lengths[:b], lengths[b:])[:, None])
    shared = same.long().cumprod(dim=1).sum(dim=1)
    lens_c, lens_r, shared = lengths[:b].tolist(), lengths[b:].tolist(), shared.tolist()
    sizes = [lc + lr - p for lc, lr, p in zip(lens_c, lens_r, shared)]
    capacity = max(sizes)

    # First-fit decreasing: each pair's segment goes into the first row with room for it.
    room: list[int] = []
    place: dict[int, tuple[int, int]] = {}
    for i in sorted(range(b), key=lambda i: -sizes[i]):
        row = next((r for r, free in enumerate(room) if free >= sizes[i]), None)
        if row is None:
            room.append(capacity)
            row = len(room) - 1
        place[i] = (row, capacity - room[row])
        room[row] -= sizes[i]
    rows = len(room)

    ids = torch.zeros(rows, capacity, dtype=input_ids.dtype, device=input_ids.device)
    pos = torch.zeros(rows, capacity, dtype=torch.long, device=input_ids.device)
    seg = torch.full((rows, capacity), -1, dtype=torch.long, device=input_ids.device)
    branch = torch.full((rows, capacity), SHARED, dtype=torch.long, device=input_ids.device)
    source = torch.full((n, width), -1, dtype=torch.long, device=input_ids.device)
    for i in range(b):
        row, off = place[i]
        p, lc, lr = shared[i], lens_c[i], lens_r[i]
        base = row * capacity + off
        # shared prefix, then the chosen continuation, then the rejected one
        ids[row, off:off + lc] = input_ids[i, :lc]
        pos[row, off:off + lc] = arange[:lc]
        ids[row, off + lc:off + lc + lr - p] = input_ids[b + i, p:lr]
        pos[row, off + lc:off + lc + lr - p] = arange[p:lr]
        seg[row, off:off + lc + lr - p] = i
        branch[row, off + p:off + lc] = CHOSEN
        branch[row, off + lc:off + lc + lr - p] = REJECTED
        source[i, :lc] = base + arange[:lc]
        source[b + i, :p] = base + arange[:p]
        source[b + i, p:lr] = base + lc + arange[: lr - p]

    q = torch.arange(capacity, device=input_ids.device)
    causal = q[:, None] >= q[None, :]
    same_seg = seg[:, :, None] == seg[:, None, :]  # padding (-1) only sees padding
    rejected_sees_chosen = (branch[:, :, None] == REJECTED) & (branch[:, None, :] == CHOSEN)
    mask = (same_seg & causal[None] & ~rejected_sees_chosen)[:, None]
    return PackPlan(ids, pos, mask, source, n * width, rows * capacity)


def supported(model) -> str:
    """Empty when the packed forward computes exactly what TRL's fused head does for ``model``,
    else the reason it does not."""
    cfg = model.config
    text = cfg.get_text_config()
    if text is not cfg:
        return "multimodal model"
    if getattr(cfg, "_attn_implementation", None) != "sdpa":
        return f"attention implementation {getattr(cfg, '_attn_implementation', None)!r} (needs sdpa)"
    for name in ("final_logit_softcapping", "output_multiplier", "lm_head_multiplier", "logits_scaling"):
        if getattr(text, name, None) is not None:
            return f"the model's {name}"
    if getattr(text, "logit_scale", None) not in (None, 1, 1.0):
        return "the model's logit_scale"
    if getattr(text, "output_router_logits", False) or hasattr(text, "num_experts"):
        return "mixture-of-experts model"
    return ""


def install(model, outputs: tuple[str, ...] = DPO_OUTPUTS) -> bool:
    """Route ``model(..., labels=..., fused_lm_head=True)`` through the packed pass.

    ``model`` is the causal LM that TRL's ``add_fused_lm_head`` already patched (the base model
    under a PEFT wrapper); everything the packed pass cannot handle falls back to that
    forward. Returns whether the packed pass was installed; its counts (batches packed, positions
    before and after, and those of them computed with gradients) are kept in
    ``model.evalign_packing``.
    """
    import torch

    try:
        from trl.trainer.utils import (
            _CHUNKED_LOGPROB_CHUNK_SIZE,
            FusedCausalLMOutput,
            _ChunkedLogProbFunction,
        )
    except ImportError:  # another TRL layout: keep TRL's forward
        log.info("packed preference forward unavailable with this TRL version; using TRL's padded batches")
        return False
    reason = supported(model)
    if reason:
        log.info("packed preference forward off: %s; using TRL's padded batches", reason)
        return False
    fallback = model.forward
    stats = model.evalign_packing = {"batches": 0, "padded_positions": 0, "packed_positions": 0, "unpacked_batches": 0,
                                     "grad_padded_positions": 0, "grad_packed_positions": 0}

    @functools.wraps(fallback)
    def forward(*args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        plan = None
        extra = {k for k, v in kwargs.items() if v is not None and k not in ("input_ids", "attention_mask", "use_cache")}
        if fused_lm_head and labels is not None and shift_labels is None and not args and not extra:
            plan = plan_batch(kwargs.get("input_ids"), kwargs.get("attention_mask"))
        if plan is not None:
            targets = labels[:, 1:]
            mask = targets != -100
            rows = plan.source[:, :-1][mask]
            if (rows < 0).any():  # a label on a padding position: not TRL's layout
                plan = None
        if plan is None:
            stats["unpacked_batches"] += 1 if fused_lm_head else 0
            return fallback(*args, fused_lm_head=fused_lm_head, labels=labels, shift_labels=shift_labels,
                            num_items_in_batch=num_items_in_batch, **kwargs)
        stats["batches"] += 1
        stats["padded_positions"] += plan.padded_positions
        stats["packed_positions"] += plan.packed_positions
        if torch.is_grad_enabled():  # training steps, as opposed to the reference pass
            stats["grad_padded_positions"] += plan.padded_positions
            stats["grad_packed_positions"] += plan.packed_positions
        hidden = model.base_model(input_ids=plan.input_ids, attention_mask=plan.attention_mask,
                                  position_ids=plan.position_ids, use_cache=False).last_hidden_state
        hidden = hidden.reshape(-1, hidden.size(-1))
        head = model.get_output_embeddings()
        per_token = _ChunkedLogProbFunction.apply(hidden[rows], head.weight, head.bias,
                                                  targets[mask], 1.0, _CHUNKED_LOGPROB_CHUNK_SIZE, None, 1.0,
                                                  outputs)
        per_token = [None if x is None else x.new_zeros(mask.shape).masked_scatter(mask, x) for x in per_token]
        log_probs, entropy, log_sum_sq_probs, mean_logits, is_top1 = per_token
        denom = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-log_probs.sum() / denom, log_probs=log_probs, entropy=entropy,
                                   log_sum_sq_probs=log_sum_sq_probs, mean_logits=mean_logits, is_top1=is_top1,
                                   label_mask=mask)

    model.forward = forward
    return True


def packed_dpo_trainer_class(base=None):
    """TRL's DPOTrainer (or ``base``, a subclass of it such as solver/sppo.py's SPPOTrainer) with
    the packed forward on the policy (and a separate reference model), installed before the
    reference log-probabilities are precomputed so that pass packs too. Not under DeepSpeed or
    FSDP, whose sharded weights TRL's own head gathers."""
    from trl import DPOTrainer

    class PackedDPOTrainer(base or DPOTrainer):
        _packing_done = False
        packing_stats: dict | None = None

        def _install_packing(self):
            if self._packing_done:
                return
            self._packing_done = True
            if self.is_deepspeed_enabled or self.is_fsdp_enabled:
                return
            from peft import PeftModel

            policy = self.model.get_base_model() if isinstance(self.model, PeftModel) else self.model
            weighted = ("log_sum_sq_probs",) if getattr(self, "use_weighting", False) else ()
            if install(policy, DPO_OUTPUTS + weighted):
                self.packing_stats = policy.evalign_packing
            if getattr(self, "ref_model", None) is not None:
                install(self.ref_model, ("log_probs",))

        def _precompute_ref_logps(self, *args, **kwargs):
            self._install_packing()
            return super()._precompute_ref_logps(*args, **kwargs)

        def train(self, *args, **kwargs):
            self._install_packing()
            return super().train(*args, **kwargs)

    return PackedDPOTrainer
