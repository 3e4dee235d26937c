from __future__ import annotations



from evalign.solver.pairs import Pair, best_worst, build_pairs, mix_pairs


def test_best_vs_worst_and_ties():
    p = best_worst(1, "q", ["a", "b", "c"], [0.2, 0.9, 0.1], "original")
    assert (p.chosen, p.rejected, p.chosen_score, p.rejected_score) == ("b", "c", 0.9, 0.1)
    assert best_worst(1, "q", ["a", "b"], [0.5, 0.5], "original") is None  # nothing to learn
    assert best_worst(1, "q", ["same", " same "], [0.1, 0.9], "original") is None  # identical texts
    assert best_worst(1, "q", ["a"], [1.0], "original") is None  # k = 1
    nan = best_worst(1, "q", ["a", "b", "c"], [float("nan"), 0.3, 0.7], "original")
    assert (nan.chosen, nan.rejected) == ("c", "b")
    # Equal rewards at the top: the earliest sample wins, deterministically.
    assert best_worst(1, "q", ["a", "b", "c"], [0.9, 0.9, 0.1], "x").chosen == "a"


def test_build_pairs_counts_ties():
    pairs, ties = build_pairs([1, 2, 3], ["q1", "q2", "q3"], [["a", "b"], ["c", "d"], ["e", "f"]],
                              [[0.1, 0.9], [0.5, 0.5], [0.3, 0.2]], "evolved")
    assert [p.prompt_id for p in pairs] == [1, 3] and ties == 1
    assert all(p.source == "evolved" for p in pairs)


def _pairs(n, source):
    return [Pair(i, f"q{i}", "c", "r", 1.0, 0.0, source) for i in range(n)]


def test_mix_keeps_fractions_of_each_source_and_is_seeded():
    orig, evol = _pairs(20, "original"), _pairs(40, "evolved")
    mixed = mix_pairs(orig, evol, 0.2, 0.8, seed=3)
    assert sum(p.source == "original" for p in mixed) == 4
    assert sum(p.source == "evolved" for p in mixed) == 32
    assert mixed == mix_pairs(orig, evol, 0.2, 0.8, seed=3)
    assert mixed != mix_pairs(orig, evol, 0.2, 0.8, seed=4)
    # The paper's sizes: 25% of N sampled x 4 evolutions ~ N evolved; 0.2 N + 0.8 N = N pairs.
    assert len(mix_pairs(_pairs(100, "original"), _pairs(100, "evolved"), 0.2, 0.8, 0)) == 100
    # A small pool keeps a buffer pair (round, not floor).
    assert sum(p.source == "original" for p in mix_pairs(_pairs(3, "original"), [], 0.2, 0.8, 0)) == 1

