"""Instruments that look inside a fine-tuning run rather than at its outcome.

`ntk`: the empirical neural tangent kernel, restricted to any subset of parameters, and the
linearised prediction of how a gradient step moves the function on trace points.
"""
