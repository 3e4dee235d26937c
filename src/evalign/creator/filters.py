"""Elimination filter for evolved prompts: drop what the creator got wrong before the solver
spends generations, rewards and training on it.

Checks run in the order of ``FILTER_REASONS``; the first failure is the recorded reason.
With ``cfg.enabled`` false (the authors' setup, which filters nothing) only ``empty`` is
checked: an unusable creator output is not a prompt at all.

``answers_prompt`` is deliberately conservative (a false drop loses a good prompt, a false
keep costs one noisy pair): it fires on answer-style openings ("Sure, ...", "As an AI ...",
"To find X, we need to ...", "The answer is ..."), on a bare code body, or on a long text
that asks nothing: no question mark, no imperative sentence (also after a leading clause:
"Using the table, write ..."), no request phrase and no instruction addressed to the reader
("In this task, you will be given ...", "You should write ...").

Similarity is the Jaccard index of word 3-gram sets of the normalised text (lowercase,
punctuation removed, whitespace collapsed; a text under three words is one shingle). Jaccard
alone punishes a faithful in-depth evolution of a long prompt: 20 added words leave a
150-word prompt at Jaccard ~0.85 with its parent. So a text is a near-duplicate of another
only when it is equal up to case, whitespace and punctuation, or when it is Jaccard-similar
*and* adds fewer than ``min_new_words`` words of its own (words of the text outside the
longest in-order word matches with the other, ``new_words``). The same test guards the
parent and the pool (which holds the parent and earlier kept evolutions); the evaluation
prompts keep plain Jaccard, since an evaluation prompt plus a constraint is still
contaminated. Pool and evaluation prompts go in MinHash LSH indexes (datasketch, 128
permutations, fixed seed) so a 100k-prompt pool is searched without comparing every pair.
Its bands are chosen so a pair at exactly the threshold is found with probability >=
``LSH_RECALL`` (datasketch's own choice finds one there less than half the time); candidates
are confirmed with the exact test, and an exact duplicate of the normalised text always counts.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from difflib import SequenceMatcher

from datasketch import MinHash, MinHashLSH

from evalign.config import FilterConfig
from evalign.creator.templates import TEMPLATE_MARKERS

EMPTY = "empty"
TOO_SHORT = "too_short"
TOO_LONG = "too_long"
COPIES_TEMPLATE = "copies_template"
ANSWERS_PROMPT = "answers_prompt"
DUPLICATE_PARENT = "duplicate_parent"
DUPLICATE_POOL = "duplicate_pool"
CONTAMINATED = "contaminated"
FILTER_REASONS = (
    EMPTY,
    TOO_SHORT,
    TOO_LONG,
    COPIES_TEMPLATE,
    ANSWERS_PROMPT,
    DUPLICATE_PARENT,
    DUPLICATE_POOL,
    CONTAMINATED,
)

#: Bumped whenever a check changes which prompts pass; part of the filter stage's key.
FILTER_VERSION = "evalign-filters-2"

NUM_PERM = 128
MINHASH_SEED = 1
LSH_RECALL = 0.99
LONG_ANSWER_WORDS = 60


@dataclass(frozen=True)
class FilterDecision:
    kept: bool
    reason: str | None = None  # one of FILTER_REASONS when dropped


# ------------------------------------------------------------------------------ similarity


def normalize(text: str) -> str:
    text = re.sub(r"[^\w\s]", "", text.lower())
    return " ".join(text.split())


def shingles(normalized: str) -> frozenset[str]:
    words = normalized.split()
    if len(words) < 3:
        return frozenset([" ".join(words)]) if words else frozenset()
    return frozenset(" ".join(words[i : i + 3]) for i in range(len(words) - 2))


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    union = len(a | b)
    return len(a & b) / union if union else 0.0


def similarity(x: str, y: str) -> float:
    """Word 3-gram Jaccard of two texts after normalisation."""
    return jaccard(shingles(normalize(x)), shingles(normalize(y)))


def new_words(text: str, other: str) -> int:
    """How many of ``text``'s normalised words are not part of its in-order word matches with
    ``other``: the material ``text`` adds (an insertion or a replacement), whatever its length."""
    return _added(normalize(text).split(), normalize(other).split())


def _added(words: list[str], others: list[str]) -> int:
    matcher = SequenceMatcher(None, others, words, autojunk=False)
    return len(words) - sum(block.size for block in matcher.get_matching_blocks())


def is_near_duplicate(text: str, other: str, threshold: float, min_new_words: int) -> bool:
    """Equal up to case, whitespace and punctuation, or Jaccard >= ``threshold`` while adding
    fewer than ``min_new_words`` words to ``other``."""
    if normalize(text) == normalize(other):
        return True
    return similarity(text, other) >= threshold and new_words(text, other) < min_new_words


def lsh_params(threshold: float, num_perm: int = NUM_PERM, recall: float = LSH_RECALL) -> tuple[int, int]:
    """(bands, rows): the most rows per band (fewest false candidates) that still finds a
    pair of Jaccard ``threshold`` with probability >= ``recall``."""
    for rows in range(num_perm // 2, 0, -1):
        bands = num_perm // rows
        if 1 - (1 - threshold**rows) ** bands >= recall:
            return bands, rows
    return num_perm, 1


def _minhash(sh: frozenset[str]) -> MinHash:
    m = MinHash(num_perm=NUM_PERM, seed=MINHASH_SEED)
    m.update_batch([s.encode("utf-8") for s in sh])
    return m


class NearDuplicateIndex:
    """Answers "is this text a near-duplicate of an indexed one?" at scale: Jaccard >=
    threshold, and with ``min_new_words`` set, adding fewer words than that (``is_near_duplicate``)."""

    def __init__(self, threshold: float, texts: Iterable[str] = (), min_new_words: int | None = None) -> None:
        self.threshold = threshold
        self.min_new_words = min_new_words
        self._lsh = MinHashLSH(num_perm=NUM_PERM, params=lsh_params(threshold))
        self._shingles: list[frozenset[str]] = []
        self._words: list[list[str]] = []
        self._exact: set[str] = set()
        prepared = [(n, shingles(n)) for n in map(normalize, texts)]
        prepared = [(n, sh) for n, sh in prepared if sh]
        hashes = MinHash.bulk(
            [[s.encode("utf-8") for s in sh] for _, sh in prepared], num_perm=NUM_PERM, seed=MINHASH_SEED
        )
        for (n, sh), mh in zip(prepared, hashes):
            self._insert(n, sh, mh)

    def _insert(self, normalized: str, sh: frozenset[str], mh: MinHash) -> None:
        self._exact.add(normalized)
        self._lsh.insert(len(self._shingles), mh)
        self._shingles.append(sh)
        self._words.append(normalized.split())

    def add(self, text: str) -> None:
        n = normalize(text)
        sh = shingles(n)
        if sh:
            self._insert(n, sh, _minhash(sh))

    def contains_near(self, text: str) -> bool:
        n = normalize(text)
        if n in self._exact:
            return True
        sh = shingles(n)
        if not sh or not self._shingles:
            return False
        words = n.split()
        return any(self._matches(sh, words, k) for k in self._lsh.query(_minhash(sh)))

    def _matches(self, sh: frozenset[str], words: list[str], k: int) -> bool:
        if jaccard(sh, self._shingles[k]) < self.threshold:
            return False
        return self.min_new_words is None or _added(words, self._words[k]) < self.min_new_words


# ------------------------------------------------------------------------------ answers

_ANSWER_OPENING = re.compile(
    r"^\W*(?:(?:sure|certainly|of course|absolutely)\s*[,!.:]"
    r"|here(?:'s|’s| is| are) (?:the |my |an? |some |a few )?(?:answers?|responses?|solutions?)\b"
    r"|here(?:'s|’s| is| are) (?:some|a few|\d+|several) (?:tips|ways|steps|ideas|suggestions|reasons|examples)\b"
    r"|(?:the )?(?:correct |final |short )?answer(?: is\b|\s*:)|solution\s*:"
    r"|great question\b|as an ai\b|as a(?:n ai)? language model\b"
    r"|to \w+[^.?!\n]{0,100}?,\s*we (?:need|have) to\b"  # "To determine X, we need to ..."
    r"|i(?:'m|’m| am) sorry,? but\b|i can(?:not|'t|’t) (?:help|assist|comply|do that)\b)",
    re.I,
)
# A solution body: the text opens with code (a prompt about code says what to do with it first).
_CODE_OPENING = re.compile(r"^\s*(?:```\w*\s*)?(?:def |class |import |from \w[\w.]* import |#include\b|function \w)")
_CODE_LINE = re.compile(r"^(?:\s|```|def |class |import |from \w|return\b|#include|function |[}\])])")
_IMPERATIVES = frozenset(
    """write explain describe create list give compose design compare summarize summarise
    translate calculate compute analyze analyse draft generate suggest provide outline plan
    find solve implement build develop evaluate identify propose recommend rewrite edit prove
    show tell help imagine discuss classify convert estimate make name define construct derive
    argue critique review debug fix optimize optimise predict rank sort choose decide determine
    brainstorm prepare produce illustrate elaborate answer assess format act pretend assume
    read label select output return respond reply paraphrase extract complete fill rate judge
    count detect""".split()
)
# Not among them: verbs that open the steps of advice as often as a request ("Choose a bush
# variety, add a stake, keep the soil moist"), so a long how-to answer does not pass for a prompt.
_ADVICE_VERBS = frozenset("choose add keep use avoid ensure start end include consider make focus check try".split())
_IMPERATIVES = _IMPERATIVES - _ADVICE_VERBS
_TASK_VERBS = (
    r"(?:write|answer|generate|classify|translate|identify|determine|provide|create|produce|output|"
    r"summari[sz]e|explain|list|rewrite|respond|label|select|choose|decide|compose|return|find|read|"
    r"describe|evaluate|rate|judge|give|predict|paraphrase|convert|extract|complete|fill|design|solve)"
)
_REQUEST_CUES = re.compile(
    r"\b(?:please|can you|could you|would you|will you|i need|i want|i'd like|i would like|"
    r"help me|your (?:task|job|goal|answer|response|output)|you are an?|act as|let's|let us|in this task|"
    r"the task is|you (?:will|'ll) be (?:given|presented|shown|provided|asked)|"
    r"you are (?:given|provided|presented|shown|asked|required)|"
    rf"you(?:'ll| will| should| must| need to| have to| are to| may)\s+(?:\w+\s+){{0,2}}?{_TASK_VERBS}\b)"
    r"|^\s*(?:q|question|input|instructions?|task|definition|problem)\s*:",
    re.I | re.M,
)


def _sentence_verbs(sentence: str) -> list[str]:
    """The first word of a sentence, and the first after a leading clause ("Using X, write")."""
    sentence = re.sub(r"^[\s\-*•\d.)#]+", "", sentence)
    firsts = [sentence.split(maxsplit=1)[:1]]
    clause = re.match(r"^[^,.;:?!]{1,80},\s+(\w+)", sentence)
    if clause:
        firsts.append([clause.group(1)])
    return [w[0].lower().strip(",") for w in firsts if w]


def _is_request(text: str) -> bool:
    if "?" in text or _REQUEST_CUES.search(text):
        return True
    for sentence in re.split(r"(?<=[.!:;])\s+|\n+", text):
        if any(word in _IMPERATIVES for word in _sentence_verbs(sentence)):
            return True
    return False


def answers_prompt(text: str) -> bool:
    """True when ``text`` reads as an answer to a prompt rather than a prompt."""
    if _ANSWER_OPENING.match(text):
        return True
    if _CODE_OPENING.match(text):  # a request about code says so outside the code
        prose = "\n".join(line for line in text.splitlines() if line.strip() and not _CODE_LINE.match(line))
        return not _is_request(prose)
    return len(text.split()) >= LONG_ANSWER_WORDS and not _is_request(text)


def copies_template(text: str) -> bool:
    low = text.lower()
    return any(marker in low for marker in TEMPLATE_MARKERS)


# ------------------------------------------------------------------------------ filter


def _first_failure(
    text: str,
    parent: str,
    pool: NearDuplicateIndex,
    evals: NearDuplicateIndex | None,
    cfg: FilterConfig,
) -> str | None:
    if not text:
        return EMPTY
    if not cfg.enabled:
        return None
    if len(text) < cfg.min_chars:
        return TOO_SHORT
    if len(text) > cfg.max_chars:
        return TOO_LONG
    if copies_template(text):
        return COPIES_TEMPLATE
    if answers_prompt(text):
        return ANSWERS_PROMPT
    if is_near_duplicate(text, parent, cfg.dedup_threshold, cfg.min_new_words):
        return DUPLICATE_PARENT
    if pool.contains_near(text):
        return DUPLICATE_POOL
    if evals is not None and evals.contains_near(text):
        return CONTAMINATED
    return None


def filter_evolved(
    candidates: Sequence[str],
    parents: Sequence[str],
    pool: Sequence[str],
    eval_prompts: Sequence[str],
    cfg: FilterConfig,
) -> list[FilterDecision]:
    """One decision per candidate (``parents[i]`` is the text candidate i was made from).

    Kept candidates join the pool index as they are accepted, so the second of two
    near-identical new prompts is dropped as ``duplicate_pool``.
    """
    if len(candidates) != len(parents):
        raise ValueError(f"{len(candidates)} candidates but {len(parents)} parents; pass one parent per candidate")
    pool_index = NearDuplicateIndex(cfg.dedup_threshold, pool, cfg.min_new_words)
    eval_index = NearDuplicateIndex(cfg.decontamination_threshold, eval_prompts) if cfg.decontaminate else None
    decisions = []
    for text, parent in zip(candidates, parents):
        text = text.strip()
        reason = _first_failure(text, parent, pool_index, eval_index, cfg)
        if reason is None:
            pool_index.add(text)
        decisions.append(FilterDecision(reason is None, reason))
    return decisions
