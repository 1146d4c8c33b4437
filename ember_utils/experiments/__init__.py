"""Experiments: the runner that produces the committed grids under ``results/``, reading those results back,
and the unedited-model baselines."""
