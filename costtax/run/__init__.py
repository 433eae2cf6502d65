"""The run: `profile(config)` from a validated RunConfig to a finished run directory —
start-up (engine, run.json), one unit per (cell x load level x cell repeat), resume, preflight,
baselines copied from earlier runs, run events.

May import: the root modules, load, store, console, techniques, engines, rewards, prompts,
metering, report (the summary written as units finish). Nothing imports run except the CLI,
the pytest plugin and the package face (`from costtax import profile`)."""
