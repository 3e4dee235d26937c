"""Helpers for tests, of evalign and of code built on it: tiny models, no downloads.

A tiny randomly initialised llama with a real tokenizer and chat template (SmolLM2's, read
from the built-in GGUF) trains and generates in seconds on a CPU, so the whole loop can be
exercised for real without a model hub.
"""

from __future__ import annotations

from pathlib import Path


def save_builtin_tokenizer(out: str | Path) -> Path:
    """SmolLM2's tokenizer with its chat template, from the built-in GGUF, saved to ``out``."""
    from transformers import AutoTokenizer

    from evalign import weights as models

    gguf = models.gguf_path("smollm2-135m-instruct")
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    out = Path(out)
    tok.save_pretrained(out)
    return out


def make_tiny_model(tokenizer_dir: str | Path, out: str | Path, seed: int = 0, layers: int = 2,
                    hidden: int = 32) -> Path:
    """A randomly initialised llama (about 1.6M parameters) saved as a plain HF checkpoint."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    tok = AutoTokenizer.from_pretrained(tokenizer_dir)
    torch.manual_seed(seed)
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=1024,
        bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
        tie_word_embeddings=True,
    )
    model = LlamaForCausalLM(config)
    model.generation_config.eos_token_id = tok.eos_token_id
    out = Path(out)
    model.save_pretrained(out, safe_serialization=True)
    tok.save_pretrained(out)
    return out


# ---------------------------------------------------------------------------------------
# An ArmoRM-shaped reward model (RLHFlow/ArmoRM-Llama3-8B-v0.1), random and tiny by default.

#: Llama-3's chat layout, as ArmoRM's tokenizer renders it: bos, then per message a header,
#: the trimmed content and ``<|eot_id|>``. The reward is read at the final ``<|eot_id|>``.
LLAMA3_STYLE_CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}"
    "{{ '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] | trim"
    " + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{% endif %}"
)

LLAMA3_STYLE_SPECIAL_TOKENS = ("<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>",
                               "<|end_header_id|>", "<|eot_id|>")

# Written next to the weights as the checkpoint's remote code. It follows the structure of
# ArmoRM's modeling_custom.py under transformers 4.x: the imports transformers 5 no longer
# has (LLAMA_INPUTS_DOCSTRING), a Llama backbone, a regression head over the hidden state at
# the sequence end (found as "first pad token - 1", so a pad equal to eos is read wrongly),
# a gating network over the hidden state at the last "<|eot_id|><|start_header_id|>assistant
# <|end_header_id|>\n\n" (the prompt's end), and an output dataclass carrying ``score``.
_ARMORM_STYLE_CODE = '''\
from dataclasses import dataclass
from typing import List, Optional, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
from transformers import LlamaModel, LlamaPreTrainedModel
from transformers.models.llama.modeling_llama import LLAMA_INPUTS_DOCSTRING
from transformers.utils import ModelOutput, add_start_docstrings_to_model_forward

# ids of "<|eot_id|><|start_header_id|>assistant<|end_header_id|>\\n\\n" in this tokenizer
TOKEN_PATTERN = {pattern!r}


def find_token_for_gating(ids):
    n = len(TOKEN_PATTERN)
    for j in range(len(ids) - n, -1, -1):
        if ids[j:j + n] == TOKEN_PATTERN:
            return j
    raise ValueError("Token pattern not found in the list.")


class GatingNetwork(nn.Module):
    def __init__(self, in_features, out_features, bias=True, temperature=10.0, logit_scale=1.0,
                 hidden_dim=1024, n_hidden=3):
        super().__init__()
        self.temperature = temperature
        self.logit_scale = nn.Parameter(torch.ones(1) * logit_scale)
        layers = []
        for _ in range(n_hidden):
            layers.append(nn.Linear(in_features, hidden_dim))
            in_features = hidden_dim
        layers.append(nn.Linear(in_features, out_features, bias=bias))
        self.layers = nn.ModuleList(layers)

    def forward(self, x):
        for i, layer in enumerate(self.layers):
            x = F.relu(layer(x)) if i < len(self.layers) - 1 else layer(x)
        return F.softmax(x / self.temperature, dim=1) * self.logit_scale[0]


@dataclass
class ArmoStyleOutput(ModelOutput):
    rewards: torch.FloatTensor = None
    gating_output: Optional[torch.FloatTensor] = None
    score: Optional[torch.FloatTensor] = None
    prompt_hidden_state: Optional[torch.FloatTensor] = None


class LlamaForRewardModelWithGating(LlamaPreTrainedModel):
    def __init__(self, config):
        super().__init__(config)
        self.model = LlamaModel(config)
        self.num_objectives = config.num_objectives
        self.regression_layer = nn.Linear(config.hidden_size, config.num_objectives, bias=False)
        self.post_init()
        eye = torch.zeros(config.num_objectives, config.num_objectives)
        eye[range(config.num_objectives), range(config.num_objectives)] = 1.0
        self.reward_transform_matrix = nn.Parameter(eye, requires_grad=False)
        self.gating = GatingNetwork(config.hidden_size, config.num_objectives,
                                    temperature=config.gating_temperature,
                                    hidden_dim=config.gating_hidden_dim, n_hidden=config.gating_n_hidden)

    @add_start_docstrings_to_model_forward(LLAMA_INPUTS_DOCSTRING)
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, output_attentions=None,
                output_hidden_states=None, return_dict=None):
        hidden = self.model(input_ids, attention_mask=attention_mask, position_ids=position_ids,
                            inputs_embeds=inputs_embeds, use_cache=use_cache)[0]
        batch_size = input_ids.shape[0]
        if self.config.pad_token_id is None and batch_size != 1:
            raise ValueError("Cannot handle batch sizes > 1 if no padding token is defined.")
        if self.config.pad_token_id is None:
            ends = -1
        else:
            ends = torch.eq(input_ids, self.config.pad_token_id).int().argmax(-1) - 1
            ends = (ends % input_ids.shape[-1]).to(hidden.device)
        rows = torch.arange(batch_size, device=hidden.device)
        rewards = self.regression_layer(hidden[rows, ends])
        gate_at = [find_token_for_gating(ids.tolist()) for ids in input_ids]
        prompt_hidden = hidden[rows, gate_at, :]
        gating_output = self.gating(prompt_hidden)
        score = torch.sum(gating_output * (rewards @ self.reward_transform_matrix), dim=1)
        return ArmoStyleOutput(rewards=rewards, gating_output=gating_output, score=score,
                               prompt_hidden_state=prompt_hidden)
'''


def make_llama3_style_tokenizer(out: str | Path | None = None):
    """A byte-level tokenizer with Llama-3's special tokens and chat layout, built in-process.

    Every byte is one token (no merges), then the specials; eos is ``<|eot_id|>`` and no pad
    token is set, as in Llama-3 checkpoints. Saved to ``out`` when given."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    core = Tokenizer(models.BPE(vocab={ch: i for i, ch in enumerate(alphabet)}, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in LLAMA3_STYLE_SPECIAL_TOKENS])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|begin_of_text|>", eos_token="<|eot_id|>")
    tok.chat_template = LLAMA3_STYLE_CHAT_TEMPLATE
    if out is not None:
        tok.save_pretrained(Path(out))
    return tok


def make_armorm_style_reward_model(out: str | Path, *, seed: int = 0, hidden: int = 32, layers: int = 2,
                                   heads: int = 4, kv_heads: int = 2, intermediate: int | None = None,
                                   vocab_size: int | None = None, num_objectives: int = 5,
                                   gating_hidden: int = 16, gating_layers: int = 2,
                                   dtype: str = "float32", device: str = "cpu", weights: bool = True) -> Path:
    """An ArmoRM-shaped reward model with random weights, saved as a local checkpoint directory.

    ``config.json`` maps AutoModelForSequenceClassification to ``modeling_custom.py`` in the
    same directory (load it with ``trust_remote_code=True``); that code imports
    ``LLAMA_INPUTS_DOCSTRING`` from transformers' llama module as ArmoRM's does, so loading
    needs :func:`evalign.hf_compat.restore_removed_doc_names` under transformers 5. The
    tokenizer is :func:`make_llama3_style_tokenizer`'s (eos ``<|eot_id|>``, no pad token).
    Defaults are tiny (about 30k parameters); ArmoRM itself is hidden=4096, layers=32,
    heads=32, kv_heads=8, intermediate=14336, vocab_size=128256, num_objectives=19,
    gating_hidden=1024, gating_layers=3 (pass ``dtype="bfloat16"``, ``device="cuda"`` at that
    size). The remote code is written here, not imported, so building needs no compat shim.
    ``weights=False`` writes config, code and tokenizer only: the model is then built from the
    config where it runs (``AutoModelForSequenceClassification.from_config(AutoConfig.
    from_pretrained(out, trust_remote_code=True), trust_remote_code=True)`` under
    ``torch.device("cuda")``) instead of writing and reading 15 GB at ArmoRM's size."""
    import json

    import torch
    from transformers import LlamaConfig

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tok = make_llama3_style_tokenizer(out)
    pattern = tok("<|eot_id|><|start_header_id|>assistant<|end_header_id|>\n\n", add_special_tokens=False)["input_ids"]
    (out / "modeling_custom.py").write_text(_ARMORM_STYLE_CODE.format(pattern=pattern))

    vocab_size = max(vocab_size or 0, len(tok))
    config = LlamaConfig(
        vocab_size=vocab_size, hidden_size=hidden, intermediate_size=intermediate or 2 * hidden,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
        max_position_embeddings=8192, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=None, tie_word_embeddings=False,
    )
    torch_dtype = getattr(torch, dtype)
    if weights:
        _save_armorm_style_weights(out / "model.safetensors", config, seed=seed, hidden=hidden,
                                   num_objectives=num_objectives, gating_hidden=gating_hidden,
                                   gating_layers=gating_layers, dtype=torch_dtype, device=device)

    cfg = config.to_dict()
    cfg.update(
        architectures=["LlamaForRewardModelWithGating"],
        auto_map={"AutoModelForSequenceClassification": "modeling_custom.LlamaForRewardModelWithGating"},
        num_objectives=num_objectives, gating_temperature=10.0, gating_hidden_dim=gating_hidden,
        gating_n_hidden=gating_layers, id2label={"0": "LABEL_0"}, label2id={"LABEL_0": 0},
    )
    cfg["dtype"] = dtype
    (out / "config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True) + "\n")
    return out


def _save_armorm_style_weights(path: Path, config, *, seed: int, hidden: int, num_objectives: int,
                               gating_hidden: int, gating_layers: int, dtype, device: str) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import LlamaModel

    previous = torch.get_default_dtype()
    torch.manual_seed(seed)
    try:
        torch.set_default_dtype(dtype)
        with torch.device(device):
            backbone = LlamaModel(config)
            state = {f"model.{k}": v for k, v in backbone.state_dict().items()}
            del backbone
            state["regression_layer.weight"] = torch.randn(num_objectives, hidden) * hidden ** -0.5
            state["reward_transform_matrix"] = torch.eye(num_objectives)
            state["gating.logit_scale"] = torch.ones(1)
            width = hidden
            for i in range(gating_layers + 1):
                n_out = gating_hidden if i < gating_layers else num_objectives
                state[f"gating.layers.{i}.weight"] = torch.randn(n_out, width) * width ** -0.5
                state[f"gating.layers.{i}.bias"] = torch.zeros(n_out)
                width = n_out
    finally:
        torch.set_default_dtype(previous)
    save_file({k: v.to(dtype).contiguous().cpu() for k, v in state.items()}, str(path), metadata={"format": "pt"})
