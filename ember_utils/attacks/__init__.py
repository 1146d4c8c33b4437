"""Attacks on an erased model, one file each: relearning (``relearn``), linear probes and the logit lens
(``probing``), adversarial prompts (``prompting``) and concept names spelled around the edited tokens
(``token_bypass``). Each takes a model with a state applied (or a state to apply) and returns tables with
intervals; none imports an experiment or a figure."""
