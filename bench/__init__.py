"""Reproducible benchmarks (DESIGN.md, "Performance rules"): every figure next to a floor from the same run."""
