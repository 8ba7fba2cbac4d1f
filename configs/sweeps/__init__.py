"""Sweep files: `get_sweep()` returns a list of config override dicts (see lusjax.sweep_plan)."""
