"""Run ``evalign.solver.train_entry`` in a launched rank, recording what that rank did.

tests/solver/test_launch_multiprocess.py launches this file instead of the entry module.
Each rank writes ``$EVALIGN_PROBE_DIR/rank<R>.json``: the chosen rows (token ids) of every
micro-batch it computed a loss on, whether each batch carried precomputed reference
log-probabilities, and how many times it wrote model weights.
"""

from __future__ import annotations

import atexit
import json
import os
import sys
from pathlib import Path

import transformers
import trl

record = {"rows": [], "with_ref_logps": [], "saves": 0}
_compute_loss = trl.DPOTrainer.compute_loss
_save_pretrained = transformers.PreTrainedModel.save_pretrained


def compute_loss(self, model, inputs, *args, **kwargs):
    ids, attn = inputs["input_ids"], inputs["attention_mask"]
    half = ids.shape[0] // 2  # [chosen rows; rejected rows]
    record["rows"] += [ids[i][attn[i].bool()].tolist() for i in range(half)]
    record["with_ref_logps"].append("ref_chosen_logps" in inputs)
    return _compute_loss(self, model, inputs, *args, **kwargs)


def save_pretrained(self, *args, **kwargs):
    record["saves"] += 1
    return _save_pretrained(self, *args, **kwargs)


@atexit.register
def _write() -> None:
    out = Path(os.environ["EVALIGN_PROBE_DIR"]) / f"rank{os.environ.get('RANK', '0')}.json"
    out.write_text(json.dumps(record))


trl.DPOTrainer.compute_loss = compute_loss
transformers.PreTrainedModel.save_pretrained = save_pretrained

from evalign.solver.train_entry import main

if __name__ == "__main__":
    sys.exit(main())
