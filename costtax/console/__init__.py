"""What the terminal shows while a run goes: the display of phases and units, the live
progress line.

May import: the root modules, load.levels, store.records (file names). Must not import run."""
