"""Evaluation: reading answers off a model (`scoring`), the metrics (`metrics`), one stage's rows
(`stage`), the rows themselves (`rows`), and measurements along training (`inloop`)."""
