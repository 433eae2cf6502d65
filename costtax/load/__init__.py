"""Traffic: load levels (batch, concurrency=C, rate=λ; parsed once into LoadLevel), the
capacity search over levels, and the over-saturation stop.

May import: the root modules only (the runner reads the units a search measured:
costtax.run.search_units). Every other room may import load."""
