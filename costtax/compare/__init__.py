"""Verdicts between runs: OLD vs NEW per metric with the noise the runs can justify,
the compare table, the estimates (with CIs) they rest on, and the pytest plugin's assertions.

May import: the root modules, load, store, prompts, report (summary records, fitted tables)."""
