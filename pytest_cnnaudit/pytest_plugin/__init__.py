"""The pytest layer: hooks (the ``pytest11`` entry point), nodes, per-run state, planning, progress, xdist.

The only part of the package that imports pytest; it turns the engine's audit documents into
items and reports, and nothing else."""
