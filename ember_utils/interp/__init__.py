"""Views into the model that the chapters teach with: the embedding matrix (norms, nearest tokens, scaling) and
the logit lens through the bridge's hooks (``logit_lens``)."""
