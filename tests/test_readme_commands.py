"""Every command of the README's Usage block runs as written.

The commands are read from README.md itself, so an edit there is tested here. They run in a
fresh directory with the files they name (``my.yaml``, ``my-model``, ``gpt4_turbo.json``, a
checkpoint under ``runs/x``). A command that trains or judges gets ``--set`` overrides that put
the tiny test policy and scripted creator, reward model and judge in place of the built-in
models — the test bench, not the user's path; a command without a config (``models``,
``generate``) runs exactly as written.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
from pathlib import Path

from typer.testing import CliRunner

from evalign.cli import app

README = Path(__file__).resolve().parents[1] / "README.md"

#: Commands that read a config: they train, answer or judge, so they run on the test bench.
CONFIGURED = {"ablate", "run", "eval", "judge-check", "config"}


def usage_commands() -> list[list[str]]:
    """The ``evalign ...`` lines of the README's Usage block, without their comments."""
    text = README.read_text()
    block = re.search(r"## Usage\n+```bash\n(.*?)```", text, re.S)
    assert block, "README.md has no ```bash block under '## Usage'"
    lines = [line.split("  #")[0].strip() for line in block.group(1).splitlines()]
    return [shlex.split(line)[1:] for line in lines if line.startswith("evalign ")]


def bench(tiny_model_dir: Path) -> list[str]:
    scripted = {"model": "echo", "backend": "scripted"}
    values = {
        "policy.model": str(tiny_model_dir), "policy.backend": "transformers",
        "creator.model": json.dumps(scripted), "solver.reward.model": json.dumps(scripted),
        "eval.judge": json.dumps(scripted), "prompts.limit": 8, "creator.num_evolutions": 1,
        "creator.sampling.max_new_tokens": 32, "solver.num_samples": 2, "solver.sampling.max_new_tokens": 8,
        "solver.train.max_length": 96, "solver.train.batch_size": 4, "solver.train.epochs": 1,
        "solver.train.min_pairs": 1, "eval.winrate_limit": 2, "eval.mt_limit": 1,
        "eval.answer_sampling.max_new_tokens": 8, "eval.bootstrap_samples": 100,
    }
    return [f"--set={k}={v}" for k, v in values.items()]


def test_the_readme_lists_the_commands_it_documents():
    names = {args[0] for args in usage_commands()}
    assert {"ablate", "run", "eval", "report", "judge-check", "models", "generate", "config"} <= names


def test_every_usage_command_runs_as_written(tmp_path, tiny_model_dir, monkeypatch):
    monkeypatch.chdir(tmp_path)
    shutil.copytree(tiny_model_dir, "my-model")
    shutil.copytree(tiny_model_dir, "runs/x/checkpoints/ab12")
    Path("my.yaml").write_text("run:\n  name: my\n")
    from evalign.eval.sets import load_winrate_prompts

    instructions = [p.prompt for p in load_winrate_prompts("builtin:eval", 3)]
    Path("gpt4_turbo.json").write_text(json.dumps(
        [{"instruction": i, "output": "A reference answer.", "generator": "gpt4_turbo"} for i in instructions]))
    runner = CliRunner()
    for args in usage_commands():
        extra = bench(tiny_model_dir) if args[0] in CONFIGURED else []
        result = runner.invoke(app, [*args, *extra, "--quiet"] if args[0] in CONFIGURED - {"config"} else
                               [*args, *extra])
        assert result.exit_code == 0, f"evalign {shlex.join(args)} failed:\n{result.output}\n{result.exception!r}"
    assert Path("runs/quickstart/report/report.html").is_file()
    assert Path("runs/my").is_dir()
