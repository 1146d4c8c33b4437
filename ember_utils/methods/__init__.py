"""Erasure methods. Each method is one module (or one folder for a multi-step method) whose result is a
:class:`~ember_utils.state.ModelState`, so every method is evaluated, stacked, saved and attacked the same way.

* ``ember/``: EMBER, the embedding edit (vocabulary slice, sparse factorization, concept atoms, edit, δ rule).
"""
