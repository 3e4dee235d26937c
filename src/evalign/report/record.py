"""The study record: what a study ran, kept as JSON in the run store's ``meta`` table ("study").

``run/study.py`` writes it, the report and ``evalign run`` read it. The JSON layout is the
one every existing run directory holds; ``from_json`` reads it and ``to_json`` writes it
back key for key, in the same order, so old runs load and resumed runs stay comparable.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any


@dataclass
class StageUse:
    """One stage an arm needed: computed now, or reused from an earlier run or arm."""

    arm: str
    iteration: int
    name: str
    key: str
    reused: bool
    seconds: float  # time spent now
    original_seconds: float  # what computing it took
    calls: int = 0  # creator/judge/policy calls made now


@dataclass
class SeedRecord:
    """One seed of one arm: the policy it ended with, and where its evaluation is stored.

    θ0's entry has only the policy, the evaluation and the answer length; an unset field
    is left out of the JSON, as it always was.
    """

    policy_id: str
    checkpoint: str
    checkpoints: list[str] | None = None
    train_pairs: int | None = None
    summary: dict[str, dict[str, Any]] | None = None  # per "iteration_N": counts of that iteration
    seconds_now: float | None = None
    creator_enabled: bool | None = None
    metric: str | None = None
    operator: str | None = None
    solver: str | None = None  # "online:rloo" / "online:grpo" for online eva; None: offline (pairs + preference loss)
    eval: dict[str, str] | None = None  # metric name -> the stage key its metric row is stored under
    mean_answer_chars: float | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SeedRecord:
        return cls(**_known(cls, d))

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    def checkpoint_in(self, store) -> str:
        """The policy's weights as they are found now: a trained checkpoint (policy id
        ``ckpt:...``) in ``store``'s own run directory (the record holds the path where the run
        was when it was written), anything else (θ0's model) as recorded."""
        if self.policy_id.startswith("ckpt:"):
            return str(store.checkpoint_path(self.checkpoint))
        return self.checkpoint


@dataclass
class ArmRecord:
    description: str = ""
    set: dict[str, Any] | None = None  # the arm's config overrides (θ0 has none)
    seeds: dict[str, SeedRecord] = field(default_factory=dict)  # by seed index, as a string

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ArmRecord:
        seeds = {k: SeedRecord.from_dict(v) for k, v in d.get("seeds", {}).items()}
        return cls(d.get("description", ""), d.get("set"), seeds)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"description": self.description}
        if self.set is not None:
            out["set"] = self.set
        out["seeds"] = {k: s.to_dict() for k, s in self.seeds.items()}
        return out


@dataclass
class JudgeRecord:
    """The evaluation judge, to look up its measured validity (``evalign judge-check``)."""

    judge_id: str
    mode: str
    pair_version: str
    variant: str | None = None
    n_winrate: int = 0
    n_questions: int = 0
    #: The training reward model: when it is the judge, the evaluation measures the training objective.
    reward_id: str | None = None
    reward_kind: str | None = None
    #: The judge's grading template version, to find its pointwise judge-check beside the pairwise one.
    grade_version: str | None = None

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JudgeRecord:
        return cls(**_known(cls, d))


@dataclass
class StudyRecord:
    arms: dict[str, ArmRecord] = field(default_factory=dict)
    single: bool = False
    default_arm: str | None = None
    baseline_arm: str | None = None
    judge: JudgeRecord | None = None
    stage_uses: list[StageUse] = field(default_factory=list)
    wall_seconds: float | None = None
    #: The row of the policy every arm starts its own rounds from when the first rounds are
    #: shared (``creator.first_iteration`` > 1): "theta1" after one shared DPO round.
    start_arm: str | None = None

    @classmethod
    def from_json(cls, raw: str | dict[str, Any] | None) -> StudyRecord:
        """The record in ``raw`` (the stored JSON text, or it parsed); empty when None."""
        d = json.loads(raw) if isinstance(raw, str) else dict(raw or {})
        return cls(
            arms={k: ArmRecord.from_dict(v) for k, v in d.get("arms", {}).items()},
            single=d.get("single", False),
            default_arm=d.get("default_arm"),
            baseline_arm=d.get("baseline_arm"),
            judge=JudgeRecord.from_dict(d["judge"]) if d.get("judge") else None,
            stage_uses=[StageUse(**_known(StageUse, u)) for u in d.get("stage_uses", [])],
            wall_seconds=d.get("wall_seconds"),
            start_arm=d.get("start_arm"),
        )

    def to_json(self) -> str:
        d: dict[str, Any] = {"arms": {k: a.to_dict() for k, a in self.arms.items()}, "single": self.single,
                             "default_arm": self.default_arm, "baseline_arm": self.baseline_arm}
        if self.judge is not None:
            d["judge"] = {k: v for k, v in asdict(self.judge).items() if not (k == "grade_version" and v is None)}
        d["stage_uses"] = [asdict(u) for u in self.stage_uses]
        d["wall_seconds"] = self.wall_seconds
        if self.start_arm is not None:
            d["start_arm"] = self.start_arm
        return json.dumps(d, default=str)

    def label_of(self, entry: SeedRecord) -> str:
        """The name of the arm a seed entry belongs to."""
        return next((n for n, a in self.arms.items() for e in a.seeds.values() if e is entry), "?")


def _known(cls, d: dict[str, Any]) -> dict[str, Any]:
    """The keys of ``d`` that are fields of ``cls`` (a later version's extra keys are dropped)."""
    names = {f.name for f in fields(cls)}
    return {k: v for k, v in d.items() if k in names}
