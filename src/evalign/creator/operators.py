"""Evolving operators: an LLM task (template + parser) that turns sampled prompts into new ones.

* ``evol_instruct`` (default, WizardLM; what eva runs through distilabel): each round applies
  one of five mutations, drawn uniformly and seeded per parent and round, to the previous
  round's result. Every round is kept, so ``num_evolutions`` rounds give a lineage chain
  seed -> round 1 -> ... -> round m.
* ``evol_complexity`` (Deita): the same, with the four in-depth mutations only.
* ``evol_quality``: Deita's EvolQuality rewrites *responses* to be more helpful, relevant,
  deep, creative or detailed. eva evolves prompts, so here the prompt is rewritten so that a
  good *answer* to it must have that quality (a prompt-side adaptation, which its ``label``
  says in reports); one aspect is drawn per round and rounds chain as in ``evol_instruct``.
* ``self_instruct``: one call per sampled prompt asks for ``num_evolutions`` new, varied
  queries inspired by it (a numbered list of one- or two-sentence requests); each becomes a
  prompt of depth 1. ``max_new_tokens`` is a budget per prompt, so this one call gets
  ``num_evolutions`` times it, as the chained operators spend on as many prompts; a list
  still cut off loses only its last item.

A round whose output is unusable (empty after parsing, or cut off by ``max_new_tokens``)
is returned with empty text, for the filter to count, and ends its chain: later rounds would
only rewrite junk. Every result carries the hash of its exact template plus
``OPERATOR_VERSION``, so a changed template never passes for the old one. Each operator is
registered in ``evalign.registry.OPERATORS`` (``creator.operator``'s choices).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np

from evalign.backends.base import LLM, Conversation, GenParams
from evalign.creator import templates as T
from evalign.hashing import seed_of, sha
from evalign.registry import OPERATORS as OPERATOR_REGISTRY

OPERATOR_VERSION = "evalign-operators-1"


@dataclass(frozen=True)
class Parent:
    """A sampled prompt: its store id and text."""

    id: int
    text: str


@dataclass(frozen=True)
class Evolved:
    """One new prompt and how it was made.

    ``position`` is local to one ``evolve`` call (its index in the returned list). A chain's
    round r > 1 has ``parent_position`` = the position of round r − 1 and ``parent_id`` None;
    round 1 (and every ``self_instruct`` prompt) has ``parent_position`` None and
    ``parent_id`` = the ``Parent.id``. ``root_id`` is always the sampled prompt's id.
    """

    position: int
    parent_position: int | None
    parent_id: int | None
    root_id: int
    text: str  # "" when the output was unusable
    raw: str
    round: int
    mutation: str
    operator: str
    template_hash: str
    seed: int


@dataclass(frozen=True)
class Operator:
    """A name, its templates by mutation, and whether rounds chain (else: one list call).

    ``label`` is how reports name it; it says so where evalign adapts the method."""

    name: str
    templates: Mapping[str, str]
    chained: bool
    label: str = ""
    hashes: Mapping[str, str] = field(init=False)

    def __post_init__(self) -> None:
        hashes = {m: template_hash(self.name, t) for m, t in self.templates.items()}
        object.__setattr__(self, "hashes", hashes)
        object.__setattr__(self, "label", self.label or self.name)


def template_hash(operator: str, template: str) -> str:
    """First 12 hex chars of sha256 over the operator version, name and template text."""
    return sha(f"{OPERATOR_VERSION}\n{operator}\n{template}", 12)


def _filled(fill: Callable[[str], str], tasks: Mapping[str, str]) -> dict[str, str]:
    return {m: fill(task) for m, task in tasks.items()}


_IN_DEPTH = _filled(T.rewrite_template, T.IN_DEPTH)
for _op in (
    Operator("evol_instruct", {**_IN_DEPTH, **_filled(T.create_template, T.IN_BREADTH)}, chained=True),
    Operator("evol_complexity", _IN_DEPTH, chained=True),
    Operator("evol_quality", _filled(T.quality_template, T.QUALITY), chained=True,
             label="evol_quality (prompt-side adaptation)"),
    Operator("self_instruct", {"new_queries": T.NEW_QUERIES}, chained=False),
):
    OPERATOR_REGISTRY.register(_op.name, _op)


#: The registered operators (a registry: iterate names, ``.values()``, ``[name]``).
OPERATORS = OPERATOR_REGISTRY


def get_operator(name: str) -> Operator:
    return OPERATOR_REGISTRY.get(name)


def operator_label(name: str) -> str:
    """How reports name an operator: its label, or the bare name for one not registered."""
    return OPERATOR_REGISTRY[name].label if name in OPERATOR_REGISTRY else name


# ------------------------------------------------------------------------------ prompts


def _as_data(text: str) -> str:
    """The prompt with any copy of the delimiting tags defused, so it cannot close them."""
    return re.sub(r"<(/?)\s*prompt\s*>", r"<\1 prompt >", text, flags=re.I)


def render(template: str, prompt: str, n: int | None = None) -> Conversation:
    """The one-message conversation asking the creator to apply ``template`` to ``prompt``."""
    if n is not None:
        template = template.replace("{n}", str(n))
    return [{"role": "user", "content": template.replace("{prompt}", _as_data(prompt))}]


def _seed(*parts: object) -> int:
    """A 63-bit seed that is a pure function of its parts."""
    return seed_of(*parts)


def pick_mutation(op: Operator, seed: int, parent_id: int, round_: int) -> str:
    """Uniform over the operator's mutations, seeded per (seed, parent, round)."""
    names = list(op.templates)
    rng = np.random.default_rng(_seed(seed, op.name, parent_id, round_))
    return names[int(rng.integers(len(names)))]


# ------------------------------------------------------------------------------ parsing

#: Bumped whenever parsing changes what a raw output becomes; part of the evolve stage's key,
#: so runs made with an older parser re-parse their (cached) creator outputs.
PARSER_VERSION = "evalign-parser-2"

_PROMPT_MARKER = re.compile(r"#[^#\n]{0,40}prompt\s*#\s*:?", re.I)  # "#Rewritten Prompt#:"
_KINDS = r"(?:prompt|instruction|query|request|question|version|rewrite)s?"
_META_ADJECTIVES = r"(?:new|rewritten|revised|improved|evolved|created|updated|final|modified|more \w+)"
# "Sure! Here's the rewritten prompt:", "Here is a more complex version of the prompt:" (not
# "Here is my question:", which is how users write)
_HERE_IS = re.compile(
    rf"^(?:(?:sure|certainly|of course|okay|ok|absolutely)\s*[,!.]?\s*)?"
    rf"here(?:'s|’s| is| are)\b(?!\s+(?:my|our)\b)[^\n:]{{0,80}}?\b{_KINDS}\b[^\n:]{{0,40}}:",
    re.I,
)
# Labels the creator puts before its output: "**Rewritten prompt:**", "New prompt:", "Prompt:".
# A bare "Question:" or "Instruction:" is how many real prompts are written, so it stays.
_META_LABEL = re.compile(
    rf"^\**\s*(?:the\s+)?(?:{_META_ADJECTIVES}\s+{_KINDS}|prompt|request)\s*\**\s*:\s*\**", re.I
)
_FENCED = re.compile(r"^```[\w+-]*\n(.*?)\n?```$", re.S)
_WRAPPING_TAG = re.compile(r"^<([A-Za-z][\w-]*)>(.*)</\1>$", re.S)  # <dialog>...</dialog>
_OPEN_TAG = re.compile(r"^<\s*[\w -]*prompt[\w -]*>", re.I)
_CLOSE_TAG = re.compile(r"</\s*[\w -]*prompt[\w -]*>$", re.I)
_QUOTES = {'"': '"', "'": "'", "“": "”", "‘": "’", "«": "»", "`": "`"}
_NOTE_LABEL = r"(?:notes?|explanation|changes(?:\ made)?|rationale|comments?|modifications?)\s*\**\s*[:\-—]"
# What only a remark about the rewrite says: the creator's own edits, the prompt as an object.
_ABOUT_THE_REWRITE = re.compile(
    rf"""^[(*_\-—\s]*(?:{_NOTE_LABEL}[*_\s]*)?(?:in\ this\ [\w ]{{0,20}}?(?:version|prompt),\s*)?
         i(?:'ve|’ve|\ have)?\s+(?:also\s+|now\s+)?(?:added|made|changed|rewrote|rewritten|replaced|included
         |introduced|expanded|removed|narrowed|specified|incorporated|modified|revised|adjusted|kept|turned)\b
    | ^[(*_\-—\s]*{_NOTE_LABEL}[*_\s]*i(?:'ve|’ve|\ have)?\s+(?:also\s+|now\s+)?\w+ed\b  # "Note: I deepened"
    | \b(?:original|given|{_META_ADJECTIVES}|previous|initial|old)\s+(?:prompt|request|instruction|query)s?\b
    | \b(?:rewritten|revised|evolved|modified)\s+version\b | \bthis\s+(?:rewrite|revision)\b
    | \b(?:this|the)\s+prompt\s+(?:now|has\ been|was\ (?:changed|rewritten|modified|made))\b
    | \bthe\s+added\s+(?:constraint|requirement)\b | \b(?:constraint|requirement)\s+(?:has\ been|was)\s+added\b
    | \badds?\s+(?:a|an|one)\s+(?:new\s+)?(?:constraint|requirement)\b
    | \bcompared\s+(?:to|with)\s+the\s+original\b""",
    re.I | re.X,
)


def _unquote(text: str) -> str:
    close = _QUOTES.get(text[:1])
    if close is None or len(text) < 2 or text[-1] != close:
        return text
    inner = text[1:-1]
    # a quote char inside that is not an apostrophe (letter'letter) means it is not one quote
    if re.search(rf"(?<!\w){re.escape(close)}|{re.escape(close)}(?!\w)", inner):
        return text
    return inner


def _squash(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


def is_note_about_rewrite(paragraph: str, parent: str = "") -> bool:
    """True for a remark on the rewrite ("Note: I added a constraint about ...", "This
    rewritten prompt ..."), false for a note that is part of the task ("Note: the solution
    must run in O(n log n)") and for any text the parent itself contained."""
    if not _ABOUT_THE_REWRITE.search(paragraph):
        return False
    return not (parent and _squash(paragraph) in _squash(parent))


def _drop_trailing_notes(text: str, parent: str) -> str:
    paragraphs = re.split(r"\n\s*\n", text)
    while len(paragraphs) > 1 and is_note_about_rewrite(paragraphs[-1].strip(), parent):
        paragraphs.pop()
    lines = paragraphs[-1].rstrip().split("\n")  # "...\nNote: I added ..." with no blank line
    if len(lines) > 1 and re.match(rf"^[(*_\s]*{_NOTE_LABEL}", lines[-1].strip(), re.I) and is_note_about_rewrite(
        lines[-1], parent
    ):
        paragraphs[-1] = "\n".join(lines[:-1])
    return "\n\n".join(paragraphs)


def _strip_label(pattern: re.Pattern[str], text: str, parent: str) -> str:
    """``text`` without the label ``pattern`` matches at its start, unless the parent starts
    with the same label (then it belongs to the prompt)."""
    m = pattern.match(text)
    if m is None:
        return text
    if (_squash(parent) + " ").startswith(_squash(m.group(0)) + " "):
        return text
    return text[m.end() :].strip()


def _strip_once(text: str, parent: str) -> str:
    markers = list(_PROMPT_MARKER.finditer(text))
    if markers:  # as distilabel: keep what follows the last "...Prompt#:" marker
        text = text[markers[-1].end() :]
    text = text.strip()
    for pattern in (_HERE_IS, _META_LABEL):
        text = _strip_label(pattern, text, parent)
    fenced = _FENCED.match(text)
    if fenced:
        text = fenced.group(1)
    wrapped = _WRAPPING_TAG.match(text.strip())
    if wrapped:
        text = wrapped.group(2)
    text = _CLOSE_TAG.sub("", _OPEN_TAG.sub("", text.strip()).strip()).strip()
    if text.startswith("**") and text.endswith("**") and text.count("**") == 2:
        text = text[2:-2]
    return _drop_trailing_notes(_unquote(text.strip()), parent).strip()


def parse_prompt(raw: str, parent: str = "") -> str:
    """The new prompt in a creator's reply: the creator's wrapping removed (preambles such as
    "Here is the rewritten prompt:", meta labels such as "#Rewritten Prompt#:" or "New
    prompt:", surrounding quotes, tags, fences, and trailing remarks about the rewrite);
    "" when nothing usable is left. What the prompt itself says stays, including a label
    ("Question:") or a note ("Note: the solution must ...") that is part of the task; a label
    or note the ``parent`` itself had is never stripped."""
    text, previous = raw.strip(), None
    while text != previous:
        previous, text = text, _strip_once(text, parent)
    return text if re.search(r"[^\W_]", text) else ""


_ITEM = re.compile(r"^\s*(?:\*\*)?\(?\d{1,2}[.):](?:\*\*)?\s+(.*)$")


def parse_numbered_list(raw: str, parent: str = "") -> list[str]:
    """Items of a numbered list, each parsed like a prompt. Text before the first item and
    chatter after a blank line are dropped; other unnumbered lines continue the item."""
    items: list[list[str]] = []
    current: list[str] | None = None
    blank = False
    for line in raw.splitlines():
        m = _ITEM.match(line)
        if m:
            current = [m.group(1)]
            items.append(current)
        elif not line.strip():
            blank = True
            continue
        elif current is not None and not blank:
            current.append(line.strip())
        else:
            current = None  # preamble, or chatter after the list
        blank = False
    return [parse_prompt("\n".join(lines), parent) for lines in items]


def parse_output(operator: str, raw: str, parent: str, cut_off: bool = False) -> list[str]:
    """The prompts one creator call yields, as ``evolve`` records them: a chained operator's
    one prompt ("" when unusable or ``cut_off`` by the token limit); ``self_instruct``'s list
    items, less the last when the list was cut off ([""] when none is left)."""
    if get_operator(operator).chained:
        return [""] if cut_off else [parse_prompt(raw, parent)]
    texts = parse_numbered_list(raw, parent)
    if cut_off:
        texts = texts[:-1]  # the last item was cut off
    return texts or [""]


# ------------------------------------------------------------------------------ evolve


def _chained(
    parents: Sequence[Parent], llm: LLM, op: Operator, rounds: int, params: GenParams, seed: int
) -> list[Evolved]:
    out: list[Evolved] = []
    # (root, text to evolve, its key or None for the root itself)
    live: list[tuple[Parent, str, int | None]] = [(p, p.text, None) for p in parents]
    for rnd in range(1, rounds + 1):
        if not live:
            break
        round_seed = _seed(seed, op.name, rnd)
        picks = [pick_mutation(op, seed, root.id, rnd) for root, _, _ in live]
        convs = [render(op.templates[m], text) for (_, text, _), m in zip(live, picks)]
        gens = llm.generate(convs, params, [round_seed])
        nxt = []
        for (root, text_of_parent, parent_position), mutation, row in zip(live, picks, gens):
            gen = row[0]
            [text] = parse_output(op.name, gen.text, text_of_parent, gen.finish_reason == "length")
            ev = Evolved(
                position=len(out),
                parent_position=parent_position,
                parent_id=root.id if parent_position is None else None,
                root_id=root.id,
                text=text,
                raw=gen.text,
                round=rnd,
                mutation=mutation,
                operator=op.name,
                template_hash=op.hashes[mutation],
                seed=round_seed,
            )
            out.append(ev)
            if text:
                nxt.append((root, text, ev.position))
        live = nxt
    return out


def list_params(params: GenParams, n: int) -> GenParams:
    """Decoding for one call that writes ``n`` prompts: ``n`` per-prompt token budgets."""
    return replace(params, max_new_tokens=params.max_new_tokens * n)


def _self_instruct(
    parents: Sequence[Parent], llm: LLM, op: Operator, n: int, params: GenParams, seed: int
) -> list[Evolved]:
    [(mutation, template)] = op.templates.items()
    round_seed = _seed(seed, op.name, 1)
    gens = llm.generate([render(template, p.text, n) for p in parents], list_params(params, n), [round_seed])
    out: list[Evolved] = []
    for parent, row in zip(parents, gens):
        gen = row[0]
        for text in parse_output(op.name, gen.text, parent.text, gen.finish_reason == "length")[:n]:
            out.append(
                Evolved(
                    position=len(out),
                    parent_position=None,
                    parent_id=parent.id,
                    root_id=parent.id,
                    text=text,
                    raw=gen.text,
                    round=1,
                    mutation=mutation,
                    operator=op.name,
                    template_hash=op.hashes[mutation],
                    seed=round_seed,
                )
            )
    return out


def evolve(
    parents: Sequence[Parent],
    llm: LLM,
    operator: str,
    num_evolutions: int,
    params: GenParams,
    seed: int,
) -> list[Evolved]:
    """New prompts from ``parents``, in a deterministic order (round, then parent).

    Each round is one batched ``llm.generate`` call with one seed; the backend mixes it with
    each conversation, so a parent's result does not depend on the rest of the batch.
    """
    op = get_operator(operator)
    if num_evolutions < 1:
        raise ValueError(f"num_evolutions must be >= 1, got {num_evolutions}")
    if not parents:
        return []
    run = _chained if op.chained else _self_instruct
    return run(parents, llm, op, num_evolutions, params, seed)
