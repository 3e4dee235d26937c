from __future__ import annotations

import pytest

from evalign.config import TrainConfig

PAIRS = [{"prompt": f"Give advice number {i}.", "chosen": "Drink water and sleep well.",
          "rejected": "no no no no no", "chosen_win_prob": 0.6 + 0.04 * i, "rejected_win_prob": 0.35 - 0.03 * i}
         for i in range(8)]


def sppo_by_hand(log_r_w: float, log_r_l: float, p_w: float, p_l: float, beta: float) -> float:
    return 0.5 * ((log_r_w - (p_w - 0.5) / beta) ** 2 + (log_r_l - (p_l - 0.5) / beta) ** 2)


def test_the_sppo_loss_is_the_authors_formula():
    import torch

    from evalign.solver.sppo import sppo_loss

    rw, rl, pw, pl = [0.3, -1.2, 4.0], [-0.7, 0.1, -3.5], [0.9, 0.55, 0.7], [0.2, 0.45, 0.1]
    got = sppo_loss(torch.tensor(rw), torch.tensor(rl), torch.tensor(pw, dtype=torch.float64),
                    torch.tensor(pl, dtype=torch.float64), beta=0.1)
    assert got.dtype == torch.float32
    assert got.tolist() == pytest.approx([sppo_by_hand(*x, beta=0.1) for x in zip(rw, rl, pw, pl)], rel=1e-6)
    # the hard version (P_w = 1, P_l = 0) is TRL's sppo_hard, halved
    hard = sppo_loss(torch.tensor([0.5]), torch.tensor([-2.0]), torch.tensor([1.0]), torch.tensor([0.0]), beta=0.5)
    assert hard.item() == pytest.approx(0.5 * ((0.5 - 0.5 / 0.5) ** 2 + (-2.0 + 0.5 / 0.5) ** 2))


def _trainer(model_dir, tmp_path, packed: bool, **overrides):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from evalign.registry import LOSSES
    from evalign.solver.train import to_dataset, trainer_arguments

    cfg = TrainConfig(**{"loss": "sppo", "beta": 0.1, "batch_size": 4, "gradient_accumulation_steps": 1,
                         "max_length": 128, "dtype": "float32", "packed_batches": packed, "min_pairs": 1,
                         **overrides})
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    trainer = LOSSES.get("sppo").build(cfg, trainer_arguments(cfg, str(tmp_path / "work"), seed=0, quiet=True),
                                       model=model, train_dataset=to_dataset(PAIRS[:4]), processing_class=tokenizer)
    return trainer, cfg


def _completion_logps(model, batch):
    """Summed log-probabilities of each row's completion tokens, from a plain forward."""
    import torch

    with torch.no_grad():
        logits = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits.float()
    logp = torch.log_softmax(logits[:, :-1], dim=-1).gather(-1, batch["input_ids"][:, 1:, None])[..., 0]
    return (logp * batch["completion_mask"][:, 1:]).sum(dim=1).tolist()


@pytest.mark.parametrize("packed", [True, False])
def test_the_trainers_loss_on_a_tiny_batch_matches_a_hand_computation(tiny_model_dir, tmp_path, packed):
    import torch
    from transformers import AutoModelForCausalLM

    trainer, cfg = _trainer(tiny_model_dir, tmp_path, packed)
    reference = AutoModelForCausalLM.from_pretrained(tiny_model_dir).eval()  # the weights the policy starts from
    torch.manual_seed(0)
    with torch.no_grad():  # move the policy off the reference so the log-ratios are not all zero
        for p in trainer.model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    trainer.model.eval()
    examples = [trainer.train_dataset[i] for i in range(4)]
    batch = trainer.data_collator(examples)
    assert batch["chosen_win_prob"].tolist() == pytest.approx([p["chosen_win_prob"] for p in PAIRS[:4]])
    if packed:
        trainer._install_packing()
    got = trainer.compute_loss(trainer.model, batch).item()

    policy, ref = _completion_logps(trainer.model, batch), _completion_logps(reference, batch)
    assert [e["ref_chosen_logps"] for e in examples] == pytest.approx(ref[:4], rel=1e-4)  # TRL's precomputed ones
    n = len(examples)
    want = sum(sppo_by_hand(policy[i] - ref[i], policy[n + i] - ref[n + i], PAIRS[i]["chosen_win_prob"],
                            PAIRS[i]["rejected_win_prob"], cfg.beta) for i in range(n)) / n
    assert abs(policy[0] - ref[0]) > 0.05  # the check is not about zero log-ratios
    assert got == pytest.approx(want, rel=1e-4)
    if packed:
        assert trainer.packing_stats["batches"] >= 1  # the packed forward served the SPPO loss


def test_one_optimizer_step_lowers_the_sppo_loss_on_its_batch(tiny_model_dir, tmp_path):
    import torch

    trainer, _ = _trainer(tiny_model_dir, tmp_path, packed=True)
    batch = trainer.data_collator([trainer.train_dataset[i] for i in range(4)])
    trainer._install_packing()
    trainer.model.train()
    opt = torch.optim.SGD(trainer.model.parameters(), lr=1e-4)
    before = trainer.compute_loss(trainer.model, batch)
    before.backward()
    opt.step()
    with torch.no_grad():
        after = trainer.compute_loss(trainer.model, batch)
    assert after.item() < before.item()


def test_sppo_trains_through_train_preference_with_its_recipe_optimizer(tiny_model_dir, tmp_path):
    from evalign.solver.train import train_preference

    cfg = TrainConfig(loss="sppo", beta=0.1, learning_rate=2e-3, optimizer="rmsprop", epochs=3, batch_size=4,
                      gradient_accumulation_steps=1, max_length=128, warmup_ratio=0.0, min_pairs=1, dtype="float32")
    assert (cfg.optimizer, cfg.lr_scheduler) == ("rmsprop", "linear")  # the recipe's optimizer; its schedule, unset
    result = train_preference(str(tiny_model_dir), PAIRS, cfg, tmp_path / "ckpt", seed=0, quiet=True)
    assert result.steps == 6 and not result.skipped
    assert result.losses[-1] < result.losses[0]
    assert result.packing and result.packing["batches"] > 0
    assert (tmp_path / "ckpt" / "model.safetensors").is_file()


def test_sppo_without_win_probabilities_is_a_clear_error(tiny_model_dir, tmp_path):
    from evalign.errors import EvalignError
    from evalign.solver.train import train_preference

    cfg = TrainConfig(loss="sppo", batch_size=4, gradient_accumulation_steps=1, max_length=128, min_pairs=1,
                      dtype="float32")
    bare = [{k: p[k] for k in ("prompt", "chosen", "rejected")} for p in PAIRS]
    with pytest.raises(EvalignError, match="win probabilities"):
        train_preference(str(tiny_model_dir), bare, cfg, tmp_path / "ckpt", seed=0, quiet=True)
    assert not (tmp_path / "ckpt").exists()
