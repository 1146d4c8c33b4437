"""ELM (Erasure of Language Memory): a LoRA adapter trained so the model, reading concept text without any
prefix, predicts what it would predict *as a novice* rather than *as an expert* — its own context-conditional
likelihood ratio is the classifier. Three terms: erase (soft targets on forget text), retain (the frozen model's
predictions on neutral text), fluency (guided continuations of forget text).

* ``prefixes``: the expert/novice (or source/genre) prefix pairs and the measurement that chooses them.
* ``target``: the per-position ELM target distribution, aligned under the prefixes.
* ``fluency``: the guided continuations, generated once by the frozen model.
* ``train``: settings (:class:`ELMConfig`, CPU and GPU presets) and the training loop.
"""
from .prefixes import BASE_MODEL_PREFIXES, INSTRUCT_PREFIXES, PrefixPair, prefix_gap, prefix_gap_table
from .target import TeacherTargets, elm_target, eta_schedule, soft_cross_entropy, teacher_targets
from .train import ELM_PRESETS, ELMConfig, ELMResult, elm_config_for, train_elm

__all__ = ["PrefixPair", "BASE_MODEL_PREFIXES", "INSTRUCT_PREFIXES", "prefix_gap", "prefix_gap_table",
           "elm_target", "eta_schedule", "soft_cross_entropy", "teacher_targets", "TeacherTargets",
           "ELMConfig", "ELMResult", "ELM_PRESETS", "elm_config_for", "train_elm"]
