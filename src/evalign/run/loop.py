"""The eva loop: named stages, each keyed by a hash of its inputs, over one run store.

One iteration of an arm::

    generate -> reward -> informativeness -> sample -> evolve -> filter
             -> generate (evolved) -> reward (evolved) -> pairs -> train

With the creator off (the baseline arm, or iterations before ``creator.first_iteration``)
it is ``generate -> reward -> pairs -> train`` on the original prompts. Online eva
(``solver.mode: online``) keeps the creator's stages and trains in one ``online`` stage (RLOO or
GRPO on the policy's own rollouts, solver/online.py) on a buffer of original and evolved
prompts; the next creator reads that phase's rollout rewards.

A stage's key hashes everything its outputs depend on (not the arm's name), so arms that
ask for the same work share it, and a finished stage is never run again: rerunning the same
command resumes at the first unfinished stage. Inside a stage, unit work (generations,
rewards, judgments, creator calls) is cached as it completes, so a killed stage redoes only
what was not yet committed.

A train stage records its checkpoint relative to the run directory (``checkpoints/<key>``) and
a fingerprint of its weight files (solver/train.py ``weights_fingerprint``). Reusing a finished
train stage first checks that fingerprint: a checkpoint that is missing (a copied run whose
weights were deleted), truncated or changed is removed and the stage reruns, training it again
from the same pairs and seed, with a warning saying why.
"""

from __future__ import annotations

import json
import logging
import math
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from evalign import creator, faults
from evalign.backends.base import GenParams
from evalign.config import Config
from evalign.generation import CachedLLM, cached_generate, user
from evalign.backends.pool import ModelPool, spec_model_id
from evalign.progress import log_event, say
from evalign.prompts import load_prompts
from evalign.report.record import StageUse
from evalign.judge.reward import RewardModel, build_reward_model
from evalign.solver.online import Rollout, last_rewards, train_online
from evalign.solver.pairs import Pair, build_pairs, mix, mix_pairs
from evalign.solver.train import train_preference, weights_fingerprint, weights_problem
from evalign.solver.win_prob import (estimate_key, estimator, judge_identity, judge_pairwise, judged,
                                     needs_judge_error)
from evalign.hashing import key_of, sha
from evalign.store import RunStore

log = logging.getLogger(__name__)


@dataclass
class ArmState:
    name: str
    policy_path: str
    policy_id: str
    checkpoints: list[str] = field(default_factory=list)
    train_pairs: int = 0
    summary: dict[str, Any] = field(default_factory=dict)
    #: (policy id, weights path) at the end of each iteration, in order: the study reads the
    #: policy that shared first rounds ended with (θ1 before ``creator.first_iteration``: 2).
    after_iteration: list[tuple[str, str]] = field(default_factory=list)


def _calls_of(outputs: dict[str, Any]) -> int:
    """The model calls a finished stage's attempts committed (runs before that was counted
    record the finishing attempt's count as ``calls``)."""
    return int(outputs.get("_calls", outputs.get("calls", 0)) or 0)


def derived_seed(*parts: Any) -> int:
    return int(key_of("seed", *parts)[:8], 16)


class Runner:
    """Runs arms of eva on one store, sharing models and stages between them."""

    def __init__(self, base: Config, store: RunStore, pool: ModelPool, eval_prompts: list[str] | None = None) -> None:
        self.base = base
        self.store = store
        self.pool = pool
        self.eval_prompts = eval_prompts or []
        self.uses: list[StageUse] = []
        #: Keys of stages an earlier process of this study used, and those uses (arm, iteration,
        #: stage name, key): the study record's stage uses.
        self.recorded: set[str] = set()
        self.recorded_uses: set[tuple[str, int, str, str]] = set()
        self._reward_models: dict[str, RewardModel] = {}

    # ------------------------------------------------------------------ stage machinery

    def stage(self, name: str, arm: str, iteration: int, inputs: dict[str, Any],
              fn: Callable[[str], dict[str, Any]],
              stale: Callable[[dict[str, Any]], str | None] | None = None) -> dict[str, Any]:
        """The outputs of stage ``name``: stored ones if it finished (and ``stale`` of them,
        when given, is None), else ``fn(key)``'s, stored."""
        key = key_of(name, inputs)
        done = self.store.stage_outputs(key)
        why = stale(done) if done is not None and stale is not None else None
        if why is not None:
            log.warning("%s stage of %s iteration %d runs again: %s", name, arm, iteration, why)
            say(f"  {name}: running again ({why})")
            done = None
        if done is not None:
            if (arm, iteration, name, key) in self.recorded_uses:
                pass  # this use is in the study record already: a rerun adds nothing to the figures
            elif self._first_use(key):  # finished by an earlier process of this run, which a kill ended
                self.uses.append(StageUse(arm, iteration, name, key, False, done.get("_seconds", 0.0),
                                          done.get("_seconds", 0.0), _calls_of(done)))
            else:
                self.uses.append(StageUse(arm, iteration, name, key, True, 0.0, done.get("_seconds", 0.0)))
            log_event(log, "stage reused", stage=name, arm=arm, iteration=iteration, key=key)
            return {**done, "_key": key}
        self.store.begin_stage(key, name, arm, iteration)
        faults.point(f"stage:{name}:begin")
        t0 = time.perf_counter()
        out = fn(key)
        faults.point(f"stage:{name}:end")
        seconds, calls = self.store.finish_stage(key, out, time.perf_counter() - t0)
        out = {**out, "_seconds": seconds, "_calls": calls}
        self.uses.append(StageUse(arm, iteration, name, key, False, seconds, seconds, calls))
        log_event(log, "stage done", stage=name, arm=arm, iteration=iteration, key=key, seconds=round(seconds, 2))
        return {**out, "_key": key}

    def _first_use(self, key: str) -> bool:
        """Whether no use of stage ``key`` is recorded yet: the stage was computed for this study
        (by a process a kill ended before it recorded its uses), not reused from elsewhere."""
        return key not in self.recorded and all(u.key != key for u in self.uses)

    # ------------------------------------------------------------------ shared pieces

    def seed_pool(self) -> list[int]:
        cfg = self.base

        def run(key: str) -> dict[str, Any]:
            records = load_prompts(cfg.prompts, seed=cfg.run.seed)
            ids = self.store.add_prompts([
                {"uid": f"seed:{sha(r.text)}", "text": r.text, "origin": "seed", "source": r.source,
                 "category": r.category, "iteration": 0, "depth": 0}
                for r in records
            ])
            return {"prompt_ids": ids, "n": len(ids)}

        out = self.stage("seed_pool", "*", 0, {"prompts": cfg.prompts.model_dump(mode="json"), "seed": cfg.run.seed}, run)
        return list(out["prompt_ids"])

    def reward_model(self, cfg: Config) -> RewardModel:
        spec_key = json.dumps(cfg.solver.reward.model_dump(mode="json"), sort_keys=True)
        if spec_key not in self._reward_models:
            llm = None if cfg.solver.reward.kind == "classifier" else self.pool.get(cfg.solver.reward.model)
            self._reward_models[spec_key] = build_reward_model(cfg.solver.reward, llm, self.store)
        return self._reward_models[spec_key]

    def base_policy(self, cfg: Config) -> tuple[str, str]:
        """(weights path for training, policy id) of the starting policy."""

        return cfg.policy.model, spec_model_id(cfg.policy)

    # ------------------------------------------------------------------ solver stages

    def sample_and_score(self, cfg: Config, arm: str, it: int, state: ArmState, prompt_ids: list[int],
                         label: str) -> tuple[list[list[str]], list[list[float]], str]:
        """k responses per prompt from the current policy, and their rewards."""
        texts = [r["text"] for r in self.store.prompts(prompt_ids)]
        params = GenParams.from_config(cfg.solver.sampling)
        seeds = [derived_seed(cfg.run.seed, "samples", it) + j for j in range(cfg.solver.num_samples)]
        llm = self.pool.policy(cfg.policy, None if state.policy_path == cfg.policy.model else state.policy_path,
                               state.policy_id)
        convs = [user(t) for t in texts]
        gen_inputs = {"policy": state.policy_id, "prompts": sha(json.dumps(prompt_ids)),
                      "params": params.__dict__, "seeds": seeds}

        def generate(key: str) -> dict[str, Any]:
            _, new = cached_generate(self.store, llm, convs, params, seeds, description=f"sampling {label}")
            return {"n_prompts": len(texts), "k": len(seeds), "calls": new}

        g = self.stage(f"generate_{label}", arm, it, gen_inputs, generate)
        responses = [[x.text for x in row] for row in cached_generate(self.store, llm, convs, params, seeds)[0]]
        rm = self.reward_model(cfg)

        def reward(key: str) -> dict[str, Any]:
            scores = rm.score(texts, responses, self.store)
            flat = [s for row in scores for s in row]
            return {"n": len(flat), "mean": sum(flat) / max(1, len(flat)), "calls": len(flat)}

        r = self.stage(f"reward_{label}", arm, it, {"generate": g["_key"], "reward": rm.reward_id}, reward)
        rewards = rm.score(texts, responses, self.store)
        gaps = creator.informativeness(rewards, "gap")
        self.store.add_prompt_events(r["_key"], "reward_gap",
                                     [(p, None if v != v else float(v), None) for p, v in zip(prompt_ids, gaps)])
        return responses, rewards, r["_key"]

    # ------------------------------------------------------------------ one arm

    def run_arm(self, arm: str, cfg: Config) -> ArmState:
        if cfg.solver.mode == "online":
            return self.run_online_arm(arm, cfg)
        state, chunks, pool_ids = self._arm_start(arm, cfg)
        T = cfg.run.iterations
        for it in range(1, T + 1):
            say(f"[bold]{arm}[/bold] iteration {it}/{T}: policy {state.policy_id}")
            creator_on = cfg.creator.enabled and it >= cfg.creator.first_iteration
            texts = [r["text"] for r in self.store.prompts(pool_ids)]
            responses, rewards, reward_key = self.sample_and_score(cfg, arm, it, state, pool_ids, "pool")
            win_prob = estimator(cfg.solver.train)
            original, ties = build_pairs(pool_ids, texts, responses, rewards, "original", win_prob)
            judged_keys: dict[str, str] = {}
            if judged(cfg.solver.train):
                original, judged_keys["orig"] = self.judge_win_probs(cfg, arm, it, "pool", original, pool_ids,
                                                                     texts, responses, rewards, reward_key)
            summary: dict[str, Any] = {"pool": len(pool_ids), "original_pairs": len(original), "original_ties": ties}
            if creator_on:
                evolved_pairs, next_ids, creator_summary = self.creator_step(
                    cfg, arm, it, state, pool_ids, texts, rewards, reward_key)
                summary.update(creator_summary)
                pairs = mix_pairs(original, evolved_pairs, cfg.solver.mix_original, cfg.solver.mix_evolved,
                                  derived_seed(cfg.run.seed, "mix", it))
                mix_inputs = {"orig": reward_key, "evolved": creator_summary["reward_key"],
                              "mix": [cfg.solver.mix_original, cfg.solver.mix_evolved], "seed": cfg.run.seed}
            else:
                pairs, next_ids = original, pool_ids
                mix_inputs = {"orig": reward_key, "evolved": None, "seed": cfg.run.seed}
            if estimate_key(cfg.solver.train) is not None:  # only then: runs without an estimate keep their keys
                mix_inputs["win_prob"] = estimate_key(cfg.solver.train)
                if judged(cfg.solver.train):
                    mix_inputs["win_prob"]["stages"] = {**judged_keys, "evolved": summary.get("win_prob_key")}
            pairs_out = self.stage("pairs", arm, it, mix_inputs, lambda key: self._store_pairs(key, pairs))
            if cfg.prompts.schedule == "evolve" and creator_on:
                next_ids = sorted({p.prompt_id for p in pairs}) or pool_ids
            summary["train_pairs"] = pairs_out["n"]
            self.train_step(cfg, arm, it, state, pairs_out["_key"], pairs_out["content"])
            state.summary[f"iteration_{it}"] = summary
            state.after_iteration.append((state.policy_id, state.policy_path))
            pool_ids = chunks[it] if chunks and it < len(chunks) else next_ids
        self.pool.release_policy()
        return state

    def _arm_start(self, arm: str, cfg: Config) -> tuple[ArmState, list[list[int]] | None, list[int]]:
        """An arm's starting state, the seed pool's chunks (``prompts.schedule: split``) and
        its first iteration's pool."""
        path, pid = self.base_policy(cfg)
        seed_ids = self.seed_pool()
        chunks = _split(seed_ids, cfg.run.iterations) if cfg.prompts.schedule == "split" else None
        return ArmState(arm, path, pid), chunks, chunks[0] if chunks else seed_ids

    def run_online_arm(self, arm: str, cfg: Config) -> ArmState:
        """Online eva (solver.mode: online). Per iteration: the creator reads each pool prompt's
        rewards (the last phase's rollouts; before the first phase, π0's k samples, the same
        stages as the offline loop's, so arms of either mode share them), samples and evolves
        as offline; the buffer mixes original and evolved prompts (solver.mix_*); an online
        phase (RLOO or GRPO, solver/online.py) trains the policy on it. With the creator off
        the buffer is the pool."""
        state, chunks, pool_ids = self._arm_start(arm, cfg)
        T = cfg.run.iterations
        last_phase: tuple[str, list[Rollout]] | None = None  # (stage key, rollouts) of the last phase
        for it in range(1, T + 1):
            say(f"[bold]{arm}[/bold] iteration {it}/{T} ({cfg.solver.online.algorithm}): policy {state.policy_id}")
            creator_on = cfg.creator.enabled and it >= cfg.creator.first_iteration
            summary: dict[str, Any] = {"pool": len(pool_ids)}
            buffer = pool_ids
            if creator_on:
                texts = [r["text"] for r in self.store.prompts(pool_ids)]
                rewards = last_rewards(last_phase[1], pool_ids) if last_phase else []
                if last_phase and all(rewards):
                    reward_key = last_phase[0]
                    summary["informativeness_from"] = "rollouts"
                else:  # no rollouts of these prompts yet: the current policy's k samples
                    _, rewards, reward_key = self.sample_and_score(cfg, arm, it, state, pool_ids, "pool")
                    summary["informativeness_from"] = "samples"
                kept, creator_summary = self.evolve_prompts(cfg, arm, it, pool_ids, texts, rewards, reward_key)
                summary.update(creator_summary)
                # as the offline pairs: a share of each, even when the creator's outputs were all filtered
                buffer = mix(pool_ids, kept, cfg.solver.mix_original, cfg.solver.mix_evolved,
                             derived_seed(cfg.run.seed, "mix", it)) or pool_ids
            key, rollouts = self.online_step(cfg, arm, it, state, buffer, summary)
            last_phase = (key, rollouts)
            state.summary[f"iteration_{it}"] = summary
            state.after_iteration.append((state.policy_id, state.policy_path))
            if chunks:
                pool_ids = chunks[it] if it < len(chunks) else pool_ids
            elif cfg.prompts.schedule == "evolve" and creator_on:
                pool_ids = buffer
        self.pool.release_policy()
        return state

    def online_step(self, cfg: Config, arm: str, it: int, state: ArmState, buffer: list[int],
                    summary: dict[str, Any]) -> tuple[str, list[Rollout]]:
        """One online phase on ``buffer`` (stage ``online``): the policy after it becomes the
        arm's, its rollouts are stored; returns the stage key and the rollouts. A killed phase
        reruns from its start with the same seed (its rewards come from the store's cache)."""
        oc = cfg.solver.online
        rm = self.reward_model(cfg)
        base_path = self._trainable_path(cfg, state)
        by_id = {r["id"]: r["text"] for r in self.store.prompts(buffer)}
        prompts = [(p, by_id[p]) for p in buffer]
        tc = cfg.solver.train

        def run(key: str) -> dict[str, Any]:
            from evalign.progress import is_quiet

            self.pool.release_policy()  # the reward model stays loaded: the phase scores its rollouts
            out_dir = self.store.checkpoints_dir / key[:16]
            result = train_online(base_path, prompts, lambda t, r: rm.score(t, r, self.store), oc, tc,
                                  cfg.solver.sampling, cfg.solver.num_samples, out_dir,
                                  seed=derived_seed(cfg.run.seed, "online", it), quiet=is_quiet())
            self.store.put_rollouts(key, [asdict(r) for r in result.rollouts])
            out = result.as_dict()
            if not result.skipped:
                out["checkpoint"] = self.store.checkpoint_record(out_dir)
                out["weights"] = weights_fingerprint(out_dir)
            return out

        inputs = {"policy": state.policy_id, "prompts": sha(json.dumps(prompts, ensure_ascii=False)),
                  "online": oc.model_dump(mode="json"), "sampling": cfg.solver.sampling.model_dump(mode="json"),
                  "k": cfg.solver.num_samples, "reward": rm.reward_id,
                  "train": {k: tc.model_dump(mode="json")[k] for k in ("dtype", "lora", "gradient_checkpointing")},
                  "seed": cfg.run.seed}
        out = self.stage("online", arm, it, inputs, run, self._checkpoint_stale)
        rollouts = [Rollout(r["prompt_id"], r["step"], r["sample_index"], r["text"],
                            math.nan if r["reward"] is None else r["reward"])  # SQLite keeps a NaN as NULL
                    for r in self.store.rollouts(out["_key"])]
        summary.update({"buffer": len(buffer), "online_steps": out["steps"], "rollouts": len(rollouts),
                        "mean_reward": (out["mean_rewards"] or [None])[-1]})
        if out.get("skipped"):
            say(f"  online: skipped ({out.get('reason')})")
            return out["_key"], rollouts
        self._adopt(state, out)
        rewards = out["mean_rewards"]
        say(f"  {oc.algorithm}: {len(buffer)} prompts, {out['steps']} steps, {len(rollouts)} rollouts"
            + (f", mean reward {rewards[0]:.2f} -> {rewards[-1]:.2f}" if rewards else "")
            + f" -> {state.policy_path}")
        return out["_key"], rollouts

    def _store_pairs(self, key: str, pairs: list[Pair]) -> dict[str, Any]:
        self.store.put_pairs(key, [p.as_row() for p in pairs])
        # Training is keyed by what it learns from, not by where the pairs came from: two arms
        # whose creators happened to produce the same pairs share one checkpoint.
        content = sha(json.dumps([[p.prompt, p.chosen, p.rejected] for p in pairs], ensure_ascii=False))
        if any(p.chosen_win_prob is not None for p in pairs):  # SPPO learns the win probabilities too
            content = sha(content + json.dumps([[p.chosen_win_prob, p.rejected_win_prob] for p in pairs]))
        return {"n": len(pairs), "by_source": dict(Counter(p.source for p in pairs)), "content": content}

    def creator_step(self, cfg: Config, arm: str, it: int, state: ArmState, pool_ids: list[int], texts: list[str],
                     rewards: list[list[float]], reward_key: str) -> tuple[list[Pair], list[int], dict[str, Any]]:
        """The creator's prompts (evolve_prompts), then the solver's samples, rewards and pairs on them."""
        kept, summary = self.evolve_prompts(cfg, arm, it, pool_ids, texts, rewards, reward_key)
        if not kept:
            summary["reward_key"] = None
            return [], pool_ids, summary
        ev_texts = [r["text"] for r in self.store.prompts(kept)]
        responses, rewards_e, reward_key_e = self.sample_and_score(cfg, arm, it, state, kept, "evolved")
        pairs, ties = build_pairs(kept, ev_texts, responses, rewards_e, "evolved", estimator(cfg.solver.train))
        if judged(cfg.solver.train):
            pairs, summary["win_prob_key"] = self.judge_win_probs(cfg, arm, it, "evolved", pairs, kept,
                                                                  ev_texts, responses, rewards_e, reward_key_e)
        summary.update({"reward_key": reward_key_e, "evolved_pairs": len(pairs), "evolved_ties": ties})
        return pairs, kept, summary

    def evolve_prompts(self, cfg: Config, arm: str, it: int, pool_ids: list[int], texts: list[str],
                       rewards: list[list[float]], reward_key: str) -> tuple[list[int], dict[str, Any]]:
        """The creator's half of an iteration: informativeness of the pool's prompts from their
        rewards (stage ``reward_key``), a sample of them, their evolutions, and the filter; the
        ids of the evolved prompts kept, and a summary."""
        cc = cfg.creator

        def informativeness(key: str) -> dict[str, Any]:
            values = creator.informativeness(rewards, cc.metric)
            vals = [None if v != v else float(v) for v in values]  # NaN -> None
            self.store.add_prompt_events(key, "informativeness", [(p, v, cc.metric) for p, v in zip(pool_ids, vals)])
            return {"values": vals}

        info = self.stage("informativeness", arm, it, {"reward": reward_key, "metric": cc.metric}, informativeness)
        values = [float("nan") if v is None else v for v in info["values"]]

        def sample(key: str) -> dict[str, Any]:
            res = creator.sample_prompts(values, cc.sample_fraction, cc.sampler,
                                         derived_seed(cfg.run.seed, "sample", it), strata=cc.strata)
            for w in res.warnings:
                log.warning("iteration %d: %s", it, w)
            chosen = [pool_ids[i] for i in res.indices]
            self.store.add_prompt_events(key, "sampled", [(pool_ids[i], values[i], cc.sampler) for i in res.indices])
            return {"prompt_ids": chosen, "fallback": res.fallback, "warnings": list(res.warnings),
                    "mean_info": sum(values[i] for i in res.indices) / max(1, len(res.indices))}

        sampled = self.stage("sample", arm, it, {"info": info["_key"], "sampler": cc.sampler,
                                                 "fraction": cc.sample_fraction, "strata": cc.strata,
                                                 "seed": cfg.run.seed}, sample)
        creator_llm = self.pool.get(cc.model)
        params = GenParams.from_config(cc.sampling)

        def evolve(key: str) -> dict[str, Any]:
            parents = [creator.Parent(r["id"], r["text"]) for r in self.store.prompts(sampled["prompt_ids"])]
            cached = CachedLLM(creator_llm, self.store, description=f"evolving ({cc.operator})")
            evolved = creator.evolve(parents, cached, cc.operator, cc.num_evolutions, params,
                                     derived_seed(cfg.run.seed, "evolve", it))
            id_by_position: dict[int, int] = {}
            for e in sorted(evolved, key=lambda e: e.round):  # parents before children
                parent_id = e.parent_id if e.parent_position is None else id_by_position[e.parent_position]
                [new_id] = self.store.add_prompts([{
                    "uid": f"evolved:{key}:{e.position}", "text": e.text, "origin": "evolved", "parent_id": parent_id,
                    "root_id": self._root(e.root_id), "iteration": it, "operator": e.operator,
                    "mutation": e.mutation, "depth": e.round, "creator_model": creator_llm.model_id,
                    "template_hash": e.template_hash, "seed": e.seed, "stage_key": key, "raw": e.raw,
                }])
                id_by_position[e.position] = new_id
            return {"prompt_ids": [id_by_position[e.position] for e in evolved], "calls": cached.new_calls}

        ev = self.stage("evolve", arm, it, {"sample": sampled["_key"], "operator": cc.operator,
                                            "rounds": cc.num_evolutions, "creator": creator_llm.model_id,
                                            "params": params.__dict__, "seed": cfg.run.seed,
                                            "parser": creator.PARSER_VERSION,
                                            "templates": dict(creator.OPERATORS[cc.operator].hashes)}, evolve)

        def filter_(key: str) -> dict[str, Any]:
            rows = self.store.prompts(ev["prompt_ids"])
            parents = {r["id"]: r for r in self.store.prompts({r["parent_id"] for r in rows})}
            if cc.filter.enabled:
                decisions = creator.filter_evolved([r["text"] for r in rows], [parents[r["parent_id"]]["text"] for r in rows],
                                                   texts, self.eval_prompts, cc.filter)
            else:  # the authors' setting: keep everything non-empty
                decisions = [creator.FilterDecision(bool(r["text"].strip()), None if r["text"].strip() else "empty")
                             for r in rows]
            self.store.add_prompt_events(key, "filter", [(r["id"], float(d.kept), d.reason) for r, d in zip(rows, decisions)])
            kept = [r["id"] for r, d in zip(rows, decisions) if d.kept]
            reasons = Counter(d.reason for d in decisions if not d.kept)
            if not kept:
                log.warning("iteration %d: the creator's %d outputs were all filtered (%s)", it, len(rows), dict(reasons))
            return {"kept": kept, "n_evolved": len(rows), "filtered": dict(reasons)}

        flt = self.stage("filter", arm, it, {"evolve": ev["_key"], "filter": cc.filter.model_dump(mode="json"),
                                             "version": creator.FILTER_VERSION,
                                             "pool": sha(json.dumps(pool_ids)),
                                             "eval": sha(json.dumps(self.eval_prompts))}, filter_)
        summary = {"sampled": len(sampled["prompt_ids"]), "mean_info_sampled": sampled["mean_info"],
                   "evolved": flt["n_evolved"], "kept": len(flt["kept"]), "filtered": flt["filtered"],
                   "sample_fallback": sampled["fallback"]}
        say(f"  creator: sampled {summary['sampled']}, evolved {summary['evolved']}, kept {summary['kept']}"
            + (f", filtered {flt['filtered']}" if flt["filtered"] else ""))
        return list(flt["kept"]), summary

    def judge_win_probs(self, cfg: Config, arm: str, it: int, label: str, pairs: list[Pair], prompt_ids: list[int],
                        texts: list[str], responses: list[list[str]], rewards: list[list[float]],
                        reward_key: str) -> tuple[list[Pair], str]:
        """``pairs`` with SPPO's win probabilities from the reward's judge (sppo_win_prob:
        pairwise; solver/win_prob.judge_pairwise), judged in a ``win_prob_{label}`` stage so its
        calls are counted; and that stage's key."""
        rm = self.reward_model(cfg)
        judge = getattr(rm, "judge", None)
        if judge is None:
            raise needs_judge_error(cfg.solver.reward.kind)
        row = {pid: n for n, pid in enumerate(prompt_ids)}
        rows = [row[p.prompt_id] for p in pairs]
        wanted = [[responses[n].index(p.chosen), responses[n].index(p.rejected)] for p, n in zip(pairs, rows)]

        def estimate() -> list[dict[int, float]]:
            return judge_pairwise(judge, [texts[n] for n in rows], [responses[n] for n in rows],
                                  [rewards[n] for n in rows], wanted)

        out = self.stage(f"win_prob_{label}", arm, it, {"reward": reward_key, "judge": judge_identity(judge),
                                                         "pairs": [[p.prompt_id, w] for p, w in zip(pairs, wanted)]},
                         lambda key: {"n": len(estimate())})
        probs = estimate()  # the judgments are in the store now
        return [replace(p, chosen_win_prob=pr.get(w[0]), rejected_win_prob=pr.get(w[1]))
                for p, w, pr in zip(pairs, wanted, probs)], out["_key"]

    def _root(self, prompt_id: int) -> int:
        row = self.store.prompts([prompt_id])[0]
        return row["root_id"] or row["id"]

    def train_step(self, cfg: Config, arm: str, it: int, state: ArmState, pairs_key: str, pairs_content: str) -> None:
        tc = cfg.solver.train
        base_path = self._trainable_path(cfg, state)

        def train(key: str) -> dict[str, Any]:
            columns = ("prompt", "chosen", "rejected")
            if estimate_key(tc) is not None:  # SPPO's per-pair targets travel with the pairs
                columns += ("chosen_win_prob", "rejected_win_prob")
            pairs = [{c: r[c] for c in columns} for r in self.store.pairs(pairs_key)]
            self.free_accelerator_memory()
            out_dir = self.store.checkpoints_dir / key[:16]
            seed = derived_seed(cfg.run.seed, "train", it)
            if tc.launcher == "accelerate":
                from evalign.solver.launch import launch_training

                result = launch_training(base_path, pairs, tc, out_dir, seed=seed, run_dir=self.store.dir)
            else:
                from evalign.progress import is_quiet

                result = train_preference(base_path, pairs, tc, out_dir, seed=seed, quiet=is_quiet())
            out = result.as_dict()
            if not result.skipped:
                out["checkpoint"] = self.store.checkpoint_record(out_dir)
                out["weights"] = weights_fingerprint(out_dir)
            return out

        out = self.stage("train", arm, it, {"policy": state.policy_id, "pairs": pairs_content,
                                           "train": tc.key_dump(), "seed": cfg.run.seed}, train,
                         self._checkpoint_stale)
        if out.get("skipped"):
            say(f"  train: skipped ({out.get('reason')})")
            return
        self._adopt(state, out)
        state.train_pairs += int(out["n_pairs"])
        losses = out.get("losses") or []
        say(f"  train: {out['n_pairs']} pairs, {out['steps']} steps"
            + (f", loss {losses[0]:.4f} -> {losses[-1]:.4f}" if losses else "") + f" -> {state.policy_path}")

    def _checkpoint_stale(self, done: dict[str, Any]) -> str | None:
        """Why a finished training stage's checkpoint cannot be reused (None: it can); a damaged
        one in the run's checkpoints is removed, so neither training nor a launch job reuses it."""
        if done.get("skipped"):
            return None
        path = self.store.checkpoint_path(done["checkpoint"])
        why = weights_problem(path, done.get("weights"))
        if why is not None and path.parent == self.store.checkpoints_dir and path.is_dir():
            import shutil

            shutil.rmtree(path)
        return why

    def _adopt(self, state: ArmState, out: dict[str, Any]) -> None:
        """The checkpoint a finished training stage (``out``) wrote becomes the arm's policy."""
        checkpoint = str(self.store.checkpoint_path(out["checkpoint"]))
        state.policy_path = checkpoint
        state.policy_id = f"ckpt:{out['_key'][:16]}"
        state.checkpoints.append(checkpoint)

    def free_accelerator_memory(self) -> None:
        """Before training: drop the sampling policy, and on a GPU also the reward model and
        local judges/creators, so training does not compete with them for GPU memory (they
        reload lazily when next needed)."""
        self.pool.release_policy()
        import torch

        if torch.cuda.is_available():
            for rm in self._reward_models.values():
                rm.close()
            self._reward_models.clear()
            self.pool.close_shared()
            torch.cuda.empty_cache()

    def _trainable_path(self, cfg: Config, state: ArmState) -> str:
        from evalign import weights as models

        if state.policy_path == cfg.policy.model:
            return models.resolve_hf_dir(cfg.policy.model)
        return state.policy_path


def _split(ids: list[int], parts: int) -> list[list[int]]:
    size = max(1, len(ids) // parts)
    return [ids[i * size : (i + 1) * size] if i < parts - 1 else ids[i * size :] for i in range(parts)]
