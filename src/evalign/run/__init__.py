"""Running eva: a run's session, the iteration loop, the ablation study, and `evalign eval`."""
