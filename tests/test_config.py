from __future__ import annotations

import pytest

from evalign.config import Config, apply_overrides, load_config, parse_override, preset_names, stable_hash
from evalign.errors import ConfigError, ModelNotFoundError


def write(tmp_path, text, name="c.yaml"):
    p = tmp_path / name
    p.write_text(text, encoding="utf-8")
    return p


def test_defaults_follow_the_paper_where_it_speaks():
    cfg = Config()
    assert cfg.creator.metric == "gap"
    assert cfg.creator.sampler == "weighted"
    assert cfg.creator.sample_fraction == 0.25
    assert cfg.creator.num_evolutions == 4
    assert cfg.creator.operator == "evol_instruct"
    assert (cfg.solver.mix_original, cfg.solver.mix_evolved) == (0.2, 0.8)
    t = cfg.solver.train
    assert (t.loss, t.beta, t.learning_rate, t.lr_scheduler, t.warmup_ratio, t.epochs) == (
        "dpo", 0.05, 5e-7, "cosine", 0.1, 2.0)
    assert t.batch_size * t.gradient_accumulation_steps == 64
    assert (cfg.solver.sampling.temperature, cfg.solver.sampling.top_p) == (0.7, 0.9)


def test_unknown_key_is_one_line_with_a_hint(tmp_path):
    p = write(tmp_path, "creator:\n  metirc: gap\n")
    with pytest.raises(ConfigError) as e:
        load_config(p)
    msg = str(e.value)
    assert "\n" not in msg
    assert "unknown key 'creator.metirc'" in msg
    assert "did you mean 'creator.metric'" in msg


def test_wrong_type_and_out_of_range_name_the_key(tmp_path):
    with pytest.raises(ConfigError, match=r"solver\.num_samples") as e:
        load_config(write(tmp_path, "solver:\n  num_samples: many\n"))
    assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match=r"creator\.sample_fraction.*less than or equal to 1"):
        load_config(write(tmp_path, "creator:\n  sample_fraction: 1.5\n"))
    with pytest.raises(ConfigError, match=r"creator\.metric.*'gap'"):
        load_config(write(tmp_path, "creator:\n  metric: entropy\n"))


def test_malformed_yaml_names_the_line(tmp_path):
    with pytest.raises(ConfigError, match=r"c\.yaml: line \d+, column \d+: malformed YAML"):
        load_config(write(tmp_path, "run:\n  name: [unclosed\n"))


def test_missing_config_file_and_unknown_preset(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="unknown preset 'nope'; available: .*quickstart"):
        load_config(preset="nope")


def test_set_overrides_parse_yaml_values():
    assert parse_override("solver.num_samples=6") == ("solver.num_samples", 6)
    assert parse_override("creator.enabled=false") == ("creator.enabled", False)
    assert parse_override("run.name=x=y") == ("run.name", "x=y")
    with pytest.raises(ConfigError, match="KEY=VALUE"):
        parse_override("solver.num_samples")
    cfg = load_config(preset="quickstart", overrides=["solver.num_samples=6", "creator.metric=variance"])
    assert cfg.solver.num_samples == 6 and cfg.creator.metric == "variance"
    with pytest.raises(ConfigError, match="unknown key 'solver.nope'"):
        load_config(overrides=["solver.nope=1"])
    with pytest.raises(ConfigError, match="is a value, not a section"):
        apply_overrides({"run": {"name": "x"}}, ["run.name.sub=1"])


def test_file_keys_override_preset_keys(tmp_path):
    cfg = load_config(write(tmp_path, "run:\n  name: mine\n"), preset="quickstart")
    assert cfg.run.name == "mine"
    assert cfg.prompts.limit == load_config(preset="quickstart").prompts.limit


@pytest.mark.parametrize("name", ["quickstart", "cpu", "paper"])
def test_every_preset_loads_and_resolves(name):
    assert name in preset_names()
    cfg = load_config(preset=name)
    # The resolved config round-trips through YAML unchanged.
    again = Config.model_validate(__import__("yaml").safe_load(cfg.to_yaml()))
    assert again == cfg


def test_cpu_preset_runs_the_papers_protocol_and_quickstart_starts_from_theta0():
    from evalign.run.study import shared_start

    cpu = load_config(preset="cpu")
    assert (cpu.run.iterations, cpu.creator.first_iteration) == (2, 2)
    assert shared_start(cpu) == ("theta1", 1)  # θ0 → θ1 shared, then each arm's round from θ1
    assert shared_start(load_config(preset="paper")) == ("theta1", 1)
    quick = load_config(preset="quickstart")
    assert (quick.run.iterations, quick.creator.first_iteration) == (1, 1)
    assert shared_start(quick) is None
    # A single iteration has no round to share before the creator's.
    assert shared_start(load_config(preset="cpu", overrides=["run.iterations=1"])) is None


def test_paper_preset_is_the_papers_setting():
    cfg = load_config(preset="paper")
    assert cfg.policy.model == "google/gemma-2-9b-it"
    assert cfg.solver.reward.kind == "classifier"
    assert "ArmoRM" in cfg.solver.reward.model.model
    assert cfg.solver.num_samples == 6
    assert cfg.creator.sample_fraction == 0.25 and cfg.creator.num_evolutions == 4
    assert (cfg.solver.mix_original, cfg.solver.mix_evolved) == (0.2, 0.8)
    assert cfg.creator.filter.enabled is False  # the authors' scripts filter nothing
    t = cfg.solver.train
    assert (t.beta, t.learning_rate, t.epochs) == (0.05, 5e-7, 2)


def test_api_key_env_must_be_a_name_not_a_key(tmp_path):
    with pytest.raises(ConfigError, match="NAME of an environment variable"):
        load_config(write(tmp_path, "eval:\n  judge: {model: gpt-4o, backend: openai, api_key_env: 'sk-abc 123'}\n"))


def test_fingerprint_is_stable_and_sensitive():
    a, b = Config(), Config()
    assert a.fingerprint("creator") == b.fingerprint("creator")
    b.creator.metric = "variance"
    assert a.fingerprint("creator") != b.fingerprint("creator")
    assert stable_hash({"x": 1, "y": 2}) == stable_hash({"y": 2, "x": 1})


def test_model_names_are_checked(tmp_path):
    from evalign.weights import check_model_name

    check_model_name("smollm2-135m-instruct", "auto")
    check_model_name("google/gemma-2-9b-it", "transformers")
    check_model_name(str(tmp_path), "transformers")
    check_model_name("gpt-4o", "openai")
    with pytest.raises(ModelNotFoundError, match="no such file or directory"):
        check_model_name("./missing/checkpoint", "transformers")
    with pytest.raises(ModelNotFoundError, match="not a built-in model"):
        check_model_name("not a model!", "transformers")


# ------------------------------------------------------------- config and registries in step


def _sections():
    from pydantic import BaseModel

    seen, todo = [], [Config]
    while todo:
        model = todo.pop()
        if model in seen:
            continue
        seen.append(model)
        for f in model.model_fields.values():
            for t in (f.annotation, *getattr(f.annotation, "__args__", ())):
                if isinstance(t, type) and issubclass(t, BaseModel):
                    todo.append(t)
    return seen


def _set(cfg, path, value):
    *parents, last = path.split(".")
    node = cfg
    for p in parents:
        node = getattr(node, p)
    setattr(node, last, value)


def _get(cfg, path):
    node = cfg
    for p in path.split("."):
        node = getattr(node, p)
    return node


def test_registry_fields_accept_every_registered_name_and_refuse_others():
    from pydantic import ValidationError

    from evalign.config.choices import CHOICE_FIELDS
    from evalign.registry import LOSSES, METRICS, OPERATORS, SAMPLERS

    assert CHOICE_FIELDS["creator.metric"]() == METRICS.names()
    assert CHOICE_FIELDS["creator.sampler"]() == SAMPLERS.names()
    assert CHOICE_FIELDS["creator.operator"]() == OPERATORS.names()
    assert CHOICE_FIELDS["solver.train.loss"]() == LOSSES.names()
    for path, names in CHOICE_FIELDS.items():
        allowed = names()
        assert allowed, path
        cfg = Config()
        for name in allowed:
            _set(cfg, path, name)
            assert _get(cfg, path) == name
        with pytest.raises(ValidationError):
            _set(cfg, path, "not-registered")
        # Through a config file's route: one line naming the key and every choice.
        extra = {path.rsplit(".", 1)[0] + ".model": "m"} if path.endswith(".backend") else {}
        with pytest.raises(ConfigError) as e:
            load_config(overrides={**extra, path: "not-registered"})
        msg = str(e.value)
        assert "\n" not in msg and f"{path}: Input should be" in msg
        assert all(f"'{n}'" in msg for n in allowed)


def test_backends_accept_auto_and_eval_refuses_the_judge_check_only_variant():
    from evalign.config.choices import CHOICE_FIELDS

    assert CHOICE_FIELDS["policy.backend"]()[0] == "auto"
    assert "policy_tiebreak" not in CHOICE_FIELDS["eval.judge_variant"]()
    with pytest.raises(ConfigError, match=r"eval\.judge_variant: Input should be 'base'"):
        load_config(overrides=["eval.judge_variant=policy_tiebreak"])


def test_every_config_field_is_documented():
    sections = _sections()
    assert len(sections) >= 15
    missing = [f"{m.__name__}.{k}" for m in sections for k, f in m.model_fields.items() if not f.description]
    assert not missing, missing


@pytest.mark.parametrize("text, key, line, first", [
    ("run:\n  name: a\ncreator:\n  metric: gap\nrun:\n  name: b\n", "run", 5, 1),
    ("creator:\n  metric: gap\n  operator: evol_instruct\n  metric: mean\n", "metric", 4, 2),
])
def test_duplicate_yaml_keys_are_errors_naming_the_key_and_line(tmp_path, text, key, line, first):
    p = tmp_path / "dup.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError) as e:
        load_config(p)
    assert f"line {line}," in str(e.value) and f"duplicate key '{key}' (first on line {first})" in str(e.value)


def test_merge_keys_may_still_be_overridden_and_object_tags_stay_refused(tmp_path):
    p = tmp_path / "merge.yaml"
    p.write_text("run: &r {name: a, seed: 3}\nprompts:\n  limit: 4\n")
    assert load_config(p).run.seed == 3
    from evalign.config.loading import parse_yaml

    assert parse_yaml("a: &x {b: 1, c: 2}\nd:\n  <<: *x\n  b: 5\n", "t")["d"] == {"b": 5, "c": 2}
    with pytest.raises(ConfigError, match="could not determine a constructor"):
        parse_yaml("run: !!python/object/apply:os.system ['echo pwned']\n", "t")


def test_the_sppo_loss_takes_the_recipes_defaults_where_the_config_leaves_them_unset():
    from evalign.config import TrainConfig
    from evalign.config.schema import SPPO_DEFAULTS

    t = TrainConfig(loss="sppo")
    assert {k: getattr(t, k) for k in SPPO_DEFAULTS} == SPPO_DEFAULTS
    assert (t.beta, t.learning_rate, t.optimizer, t.lr_scheduler, t.warmup_ratio) == (0.001, 5e-7, "rmsprop",
                                                                                     "linear", 0.1)
    assert t.batch_size * t.gradient_accumulation_steps == 64  # the recipe's effective batch
    assert (t.sppo_win_prob, t.sppo_temperature) == ("bradley_terry", 1.0)
    assert TrainConfig(loss="sppo", beta=0.01, optimizer="adamw").beta == 0.01  # set values are kept
    assert TrainConfig(loss="sppo", optimizer="adamw").optimizer == "adamw"
    assert (TrainConfig().beta, TrainConfig().optimizer) == (0.05, "adamw")  # other losses: the paper's
    # a preset's values are the user's: quickstart keeps its own beta and learning rate under --set loss=sppo
    cfg = load_config(preset="quickstart", overrides=["solver.train.loss=sppo"])
    q = load_config(preset="quickstart").solver.train
    assert cfg.solver.train.loss == "sppo"
    assert (cfg.solver.train.beta, cfg.solver.train.learning_rate) == (q.beta, q.learning_rate)
    assert cfg.solver.train.optimizer == "adamw"  # RMSprop only with the recipe's learning rate
    assert TrainConfig(loss="sppo", learning_rate=1e-6).optimizer == "adamw"
    assert TrainConfig(loss="sppo", learning_rate=1e-6, optimizer="rmsprop").optimizer == "rmsprop"
    again = Config.model_validate(__import__("yaml").safe_load(cfg.to_yaml()))
    assert again == cfg
    # win probabilities from a pairwise judge: the reward's judge, so a classifier reward cannot give them
    judged = load_config(overrides=["solver.train.loss=sppo", "solver.train.sppo_win_prob=pairwise"])
    assert judged.solver.reward.kind == "judge_pointwise" and judged.solver.train.sppo_win_prob == "pairwise"
    with pytest.raises(ConfigError, match="needs a judge reward"):
        load_config(overrides=["solver.train.loss=sppo", "solver.train.sppo_win_prob=pairwise",
                               "solver.reward.kind=classifier"])


def test_the_sppo_fields_are_documented_with_the_recipe():
    from evalign.config import TrainConfig

    fields = TrainConfig.model_fields
    assert "sppo" in fields["loss"].description
    for name in ("beta", "optimizer", "lr_scheduler"):
        assert "sppo" in fields[name].description.lower() and "recipe" in fields[name].description
    for name in ("learning_rate", "warmup_ratio"):
        assert "SPPO recipe" in fields[name].description
    for name in ("sppo_win_prob", "sppo_temperature", "precompute_ref_logprobs", "packed_batches"):
        assert "SPPO" in fields[name].description


#: TrainConfig().model_dump(mode="json") before the SPPO fields (sppo_win_prob, sppo_temperature,
#: optimizer) existed: every run directory's train stage keys were made from it.
PRE_SPPO_TRAIN_DUMP = {
    "accelerate_config": "ddp", "batch_size": 8, "beta": 0.05, "dtype": "auto", "epochs": 2.0,
    "gradient_accumulation_steps": 8, "gradient_checkpointing": False, "launcher": "inprocess",
    "learning_rate": 5e-07, "lora": {"alpha": 32, "dropout": 0.05, "enabled": False, "r": 16,
                                     "target_modules": "all-linear"},
    "loss": "dpo", "lr_scheduler": "cosine", "max_length": 1024, "min_pairs": 2, "num_processes": 1,
    "packed_batches": True, "precompute_ref_logprobs": True, "simpo_gamma": 0.5, "warmup_ratio": 0.1,
}


def test_the_train_stage_key_of_a_dpo_config_is_what_it_was_before_the_sppo_fields():
    from evalign.config import TrainConfig
    from evalign.hashing import key_of

    assert TrainConfig().key_dump() == PRE_SPPO_TRAIN_DUMP
    inputs = {"policy": "p", "pairs": "c", "train": TrainConfig().key_dump(), "seed": 0}
    assert key_of("train", inputs) == "1d805af3b56938d285d38a93ac6b2e87"  # the key computed before them
    # SPPO-only fields do not move a DPO key; a non-default optimizer and the sppo loss do
    assert TrainConfig(sppo_temperature=3.0).key_dump() == PRE_SPPO_TRAIN_DUMP
    assert TrainConfig(optimizer="rmsprop").key_dump()["optimizer"] == "rmsprop"
    sppo = TrainConfig(loss="sppo").key_dump()
    assert (sppo["sppo_win_prob"], sppo["sppo_temperature"], sppo["optimizer"]) == ("bradley_terry", 1.0, "rmsprop")
    assert TrainConfig(loss="sppo", sppo_temperature=2.0).key_dump() != sppo
