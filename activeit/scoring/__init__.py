"""Prompt uncertainty: the formulas and score table, the plain reference spec, and the fast exact scorer."""
