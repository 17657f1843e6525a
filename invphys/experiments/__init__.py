"""Experiments: comparisons, the paper reproduction, tables and figures."""
