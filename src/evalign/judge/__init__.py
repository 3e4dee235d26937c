"""LLM judges and reward models: prompts, verdicts, variants, rewards."""
