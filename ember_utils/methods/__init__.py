"""Erasure methods. Each method is one module (or one folder for a multi-step method) whose result is a
:class:`~ember_utils.state.ModelState`, so every method is evaluated, stacked, saved and attacked the same way.

* ``ember/``: EMBER, the embedding edit (vocabulary slice, sparse factorization, concept atoms, edit, δ rule).
* ``elm/``: ELM, a LoRA adapter trained on the model's own expert/novice likelihood ratio (``lora``: the adapter
  as a state, through ``peft``).
* ``rmu``: RMU, misdirected residual activations at one layer (``weight_patch``: the trained weights as a state).
* ``compose``: EMBER first, then a base method trained on the edited model.
"""
