"""The distiller update: rows by slot, the per-slot optimizer, the divergence guard, the eager and device steps, their graphs, the runner."""
