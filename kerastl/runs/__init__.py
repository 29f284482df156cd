"""Runs: recipes, building a run from one, the run directory, `fit_recipe`
and comparing runs."""
