"""The packed preference forward computes what TRL's padded forward computes, for less work."""

from __future__ import annotations

import pytest
import torch

from evalign.config import TrainConfig
from evalign.solver import packing
from evalign.solver.train import train_preference

ALL_FIELDS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")


def _pair_batch(pad_side: str = "right"):
    """Three pairs the way TRL's collator lays them out: [chosen rows; rejected rows], with
    prompts of different lengths, a rejected answer that extends the chosen one, and padding."""
    pairs = [([5, 6, 7, 8], [20, 21, 22], [30, 31]),
             ([9, 10], [40, 41, 42, 43, 44, 45], [50]),
             ([11, 12, 13], [60, 61], [60, 61, 62, 63])]  # chosen is a prefix of rejected
    rows = [p + c for p, c, _ in pairs] + [p + r for p, _, r in pairs]
    completion = [[0] * len(p) + [1] * len(c) for p, c, _ in pairs] + [[0] * len(p) + [1] * len(r) for p, _, r in pairs]
    width = max(map(len, rows))
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    attn = torch.zeros_like(ids)
    comp = torch.zeros_like(ids)
    for i, (row, cm) in enumerate(zip(rows, completion)):
        sl = slice(0, len(row)) if pad_side == "right" else slice(width - len(row), width)
        ids[i, sl], attn[i, sl], comp[i, sl] = torch.tensor(row), 1, torch.tensor(cm)
    return ids, attn, ids.masked_fill(comp == 0, -100)


def _model(tiny_model_dir, fused=True):
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert model.config._attn_implementation == "sdpa"
    if fused:
        add_fused_lm_head(model, outputs=ALL_FIELDS)
    return model


def _run(model, ids, attn, labels):
    model.zero_grad()
    out = model(input_ids=ids, attention_mask=attn, labels=labels, fused_lm_head=True, use_cache=False)
    (out.log_probs.sum() + out.entropy.sum()).backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out, grads


def test_plan_shares_each_prompt_and_packs_pairs_without_padding():
    ids, attn, _ = _pair_batch()
    plan = packing.plan_batch(ids, attn)
    assert plan is not None
    # 6 rows x 8 padded positions; packed, the pairs need 4+3+2, 2+6+1 and 5+2 (their shared prefix
    # once, then each continuation): 3 rows as long as the longest pair, 9
    assert plan.padded_positions == 48 and plan.packed_positions == 27
    real = attn.bool()
    flat = plan.input_ids.reshape(-1)
    assert torch.equal(flat[plan.source[real]], ids[real])  # every real token is where the plan says
    assert (plan.source[~real] == -1).all()
    # each rejected row shares its pair's prompt positions (the shared prefix is computed once)
    assert torch.equal(plan.source[3, :4], plan.source[0, :4])
    # position ids restart the rejected continuation right after the shared prefix
    pos = plan.position_ids.reshape(-1)
    assert pos[plan.source[3, 4]].item() == 4 and pos[plan.source[0, 4]].item() == 4
    # the rejected continuation does not see the chosen one
    mask = plan.attention_mask.reshape(-1, plan.attention_mask.shape[-1])
    r, c = divmod(plan.source[3, 5].item(), plan.attention_mask.shape[-1])
    chosen_col = plan.source[0, 6].item() % plan.attention_mask.shape[-1]
    assert not plan.attention_mask[r, 0, c, chosen_col]
    assert plan.attention_mask[r, 0, c, plan.source[0, 3].item() % plan.attention_mask.shape[-1]]
    assert mask.any(dim=-1).all()  # no query row is fully masked (padding attends to itself)


def test_left_padding_or_an_odd_batch_is_not_packed():
    ids, attn, _ = _pair_batch("left")
    assert packing.plan_batch(ids, attn) is None
    ids, attn, _ = _pair_batch()
    assert packing.plan_batch(ids[:5], attn[:5]) is None


@pytest.mark.parametrize("pad_side", ["right", "left"])
def test_packed_forward_matches_trls_padded_forward_and_its_gradients(tiny_model_dir, pad_side):
    ids, attn, labels = _pair_batch(pad_side)
    ref_model = _model(tiny_model_dir)
    ref, ref_grads = _run(ref_model, ids, attn, labels)
    model = _model(tiny_model_dir)
    assert packing.install(model, ALL_FIELDS)
    out, grads = _run(model, ids, attn, labels)
    for name in ALL_FIELDS:
        torch.testing.assert_close(getattr(out, name), getattr(ref, name), atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(out.loss, ref.loss)
    assert torch.equal(out.label_mask, ref.label_mask)
    assert grads.keys() == ref_grads.keys() and grads
    for name in grads:
        torch.testing.assert_close(grads[name], ref_grads[name], atol=1e-5, rtol=1e-3)


def test_a_label_on_a_padding_position_goes_to_trls_forward(tiny_model_dir):
    ids, attn, labels = _pair_batch()
    labels[2, -1] = 7  # row 2 (5 tokens) is padded there
    model = _model(tiny_model_dir)
    assert packing.install(model, ALL_FIELDS)
    model(input_ids=ids, attention_mask=attn, labels=labels, fused_lm_head=True, use_cache=False)
    assert model.evalign_packing["unpacked_batches"] == 1 and model.evalign_packing["batches"] == 0


def test_models_it_does_not_cover_keep_trls_forward(tiny_model_dir):
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, attn_implementation="eager")
    assert "eager" in packing.supported(model)
    forward = model.forward
    assert not packing.install(model) and model.forward == forward


@pytest.mark.parametrize("lora", [False, True])
def test_training_packed_gives_the_losses_of_trls_padded_batches(tiny_model_dir, tmp_path, lora):
    pairs = [{"prompt": "Give advice number %d%s." % (i, " please" * (i % 3)), "chosen": "Drink water and sleep.",
              "rejected": "no " * (1 + i % 4)} for i in range(8)]
    losses, stats = {}, {}
    for packed in (True, False):
        cfg = TrainConfig(learning_rate=2e-3, epochs=2, batch_size=4, gradient_accumulation_steps=1, max_length=128,
                          beta=0.1, warmup_ratio=0.0, min_pairs=1, dtype="float32", packed_batches=packed,
                          lora={"enabled": lora})
        result = train_preference(str(tiny_model_dir), pairs, cfg, tmp_path / f"p{packed}", seed=0, quiet=True)
        losses[packed], stats[packed] = result.losses, result.packing
    assert stats[False] is None
    # 2 reference batches (precomputed) + 4 training steps, all packed, into fewer positions
    assert stats[True]["batches"] == 6 and stats[True]["unpacked_batches"] == 0
    assert stats[True]["packed_positions"] < stats[True]["padded_positions"]
    assert len(losses[True]) == 4
    assert losses[True] == pytest.approx(losses[False], rel=1e-3, abs=1e-4)
    assert losses[True][-1] < losses[True][0]
