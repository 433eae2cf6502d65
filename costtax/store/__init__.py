"""The run directory on disk: one declaration per record (call, answer, unit, score, run),
the writer that appends them and the one reader (RunData) everything else reads runs through.

May import: the root modules, load.levels (a record carries its LoadLevel) and prompts (a run's
prompts are recovered from its config). No pandas, no torch."""
