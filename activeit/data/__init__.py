"""Tasks, instances and pools; the prompt format; perturbations; the pool sources."""
