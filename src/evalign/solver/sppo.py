"""SPPO (Self-Play Preference Optimization; Wu et al. 2024, arXiv 2405.00675) on TRL's DPOTrainer.

SPPO regresses each response's policy/reference log-ratio onto its centred win probability:

    loss = 1/2 [ (log r_w - (P_w - 1/2) / beta)^2 + (log r_l - (P_l - 1/2) / beta)^2 ]

with log r = log pi(y|x) - log pi_ref(y|x) summed over the response's tokens, and P_w, P_l the
chosen and rejected responses' estimated win probabilities against the prompt's other samples
(solver/win_prob.py; they travel with the pairs as ``chosen_win_prob`` / ``rejected_win_prob``).
This is the ``sppo`` loss of the authors' released trainer (uclaml/SPPO); TRL's own
``sppo_hard`` is its special case P_w = 1, P_l = 0 (without the 1/2).

TRL's DPOTrainer computes its loss inside one long method with no per-example targets, so
``SPPOTrainer`` replaces ``compute_loss``: the same policy forward (``fused_lm_head``, so
solver/packing.py's packed forward serves it as it serves DPO), TRL's own reference
log-probabilities (precomputed, a reference model or the PEFT base), and the SPPO objective. A
collator wrapper adds the two win-probability columns to TRL's batches (TRL's preference
collator keeps only the token ids and masks).
"""

from __future__ import annotations

from typing import Any

from trl import DPOConfig, DPOTrainer  # noqa: F401  (DPOConfig: solver/losses.py reads it from here)

from evalign.errors import EvalignError

#: The pair columns SPPO reads (solver/train.py's PAIR_EXTRAS; the pairs table's columns).
WIN_PROB_KEYS = ("chosen_win_prob", "rejected_win_prob")
#: Batch entries that are not model inputs (TRL's own, and the win probabilities).
NON_MODEL_KEYS = frozenset({"completion_mask", "ref_chosen_logps", "ref_rejected_logps", *WIN_PROB_KEYS})


def sppo_loss(chosen_logratios, rejected_logratios, chosen_win_prob, rejected_win_prob, beta: float):
    """Per-pair SPPO loss (tensors of shape (batch,)), computed in float32: with the recipe's
    beta = 0.001 the targets reach +-500, which bf16 cannot resolve."""
    import torch

    f32 = torch.float32
    target_w = (chosen_win_prob.to(f32) - 0.5) / beta
    target_l = (rejected_win_prob.to(f32) - 0.5) / beta
    return 0.5 * ((chosen_logratios.to(f32) - target_w) ** 2 + (rejected_logratios.to(f32) - target_l) ** 2)


class WinProbCollator:
    """TRL's preference collator, plus the examples' win probabilities as float32 tensors."""

    def __init__(self, base) -> None:
        self.base = base

    def __call__(self, examples: list[dict[str, Any]]) -> dict[str, Any]:
        import torch

        missing = [k for k in WIN_PROB_KEYS if any(e.get(k) is None for e in examples)]
        out = self.base(examples)
        if missing:
            raise EvalignError(f"SPPO needs every pair's win probabilities; {', '.join(missing)} missing "
                               "(pairs built without solver.train.loss: sppo?)")
        for k in WIN_PROB_KEYS:
            out[k] = torch.tensor([float(e[k]) for e in examples], dtype=torch.float32)
        return out


class SPPOTrainer(DPOTrainer):
    """DPOTrainer whose loss is SPPO's (module docstring). TRL's ``loss_type`` is not read."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        unsupported = {"ld_alpha": self.ld_alpha is not None, "use_weighting": self.use_weighting,
                       "f_divergence_type": self.f_divergence_type != "reverse_kl"}
        if any(unsupported.values()):
            raise EvalignError(f"SPPO does not apply TRL's {', '.join(k for k, v in unsupported.items() if v)}")
        self.data_collator = WinProbCollator(self.data_collator)

    def _set_signature_columns_if_needed(self):
        super()._set_signature_columns_if_needed()  # kept even with remove_unused_columns=True
        self._signature_columns = [*self._signature_columns, *(k for k in WIN_PROB_KEYS
                                                              if k not in self._signature_columns)]

    def compute_ref_log_probs(self, model, inputs):
        return super().compute_ref_log_probs(model, {k: v for k, v in inputs.items() if k not in WIN_PROB_KEYS})

    def sequence_logps(self, model, inputs):
        """The policy's summed completion log-probabilities (chosen, rejected), with gradients,
        and the model outputs; the forward TRL's DPO loss makes."""
        model_kwargs = {k: v for k, v in inputs.items() if k not in NON_MODEL_KEYS}
        model_kwargs["use_cache"] = False
        if self.aux_loss_enabled:
            model_kwargs["output_router_logits"] = True
        completion_mask = inputs["completion_mask"]
        labels = inputs["input_ids"].masked_fill(completion_mask == 0, -100)
        outputs = model(**model_kwargs, labels=labels, fused_lm_head=True)
        seq_len = completion_mask.size(1) - 1
        logps = outputs.log_probs[:, -seq_len:].sum(dim=1)
        chosen, rejected = logps.chunk(2, dim=0)  # the batch is [chosen rows; rejected rows]
        return chosen, rejected, outputs

    def reference_logps(self, inputs):
        if self.precompute_ref_logps:
            return inputs["ref_chosen_logps"], inputs["ref_rejected_logps"]
        # TRL's reference pass: the reference model, or the policy with its adapter off under PEFT
        return self.compute_ref_log_probs(self.ref_model if self.ref_model is not None else self.model, inputs)

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        missing = [k for k in WIN_PROB_KEYS if k not in inputs]
        if missing:
            raise EvalignError(f"SPPO batch without {', '.join(missing)}")
        chosen_logps, rejected_logps, outputs = self.sequence_logps(model, inputs)
        ref_chosen, ref_rejected = self.reference_logps(inputs)
        chosen_logratios = chosen_logps - ref_chosen.to(chosen_logps.device)
        rejected_logratios = rejected_logps - ref_rejected.to(rejected_logps.device)
        p_w = inputs["chosen_win_prob"].to(chosen_logps.device)
        p_l = inputs["rejected_win_prob"].to(chosen_logps.device)
        loss = sppo_loss(chosen_logratios, rejected_logratios, p_w, p_l, self.beta).mean()
        if self.aux_loss_enabled:
            loss = loss + self.router_aux_loss_coef * outputs.aux_loss
        self._log_metrics(chosen_logps, rejected_logps, chosen_logratios, rejected_logratios, p_w, p_l)
        return (loss, outputs) if return_outputs else loss

    def _log_metrics(self, chosen_logps, rejected_logps, chosen_logratios, rejected_logratios, p_w, p_l) -> None:
        """TRL's reward metrics (beta * log-ratio) and the batch's mean win probabilities."""
        metrics = self._metrics["train" if self.model.training else "eval"]
        chosen_rewards = self.beta * chosen_logratios.detach()
        rejected_rewards = self.beta * rejected_logratios.detach()
        for name, value in (("rewards/chosen", chosen_rewards), ("rewards/rejected", rejected_rewards),
                            ("rewards/accuracies", (chosen_rewards > rejected_rewards).float()),
                            ("rewards/margins", chosen_rewards - rejected_rewards),
                            ("logps/chosen", chosen_logps.detach()), ("logps/rejected", rejected_logps.detach()),
                            ("sppo/win_prob_chosen", p_w), ("sppo/win_prob_rejected", p_l)):
            metrics[name].append(self.accelerator.gather(value).float().mean().item())

