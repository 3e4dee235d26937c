"""Evaluation: win rates, average scores, statistics and benchmark formats."""
