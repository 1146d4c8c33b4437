"""Figures and widgets for the chapters: static matplotlib/seaborn plots (``plots``), HTML and ipywidgets
views (``widgets``) and the results summary figure (``summary``). Nothing here computes a result, and no
computational module imports ``viz``."""
