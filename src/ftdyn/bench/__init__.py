"""`python -m ftdyn.bench`: ftdyn's training and evaluation against `transformers.Trainer` and a
per-example loop, measured in one invocation (`__main__`, docs/performance.md)."""
