"""Views into the model that the chapters teach with: the embedding matrix (norms, nearest tokens, scaling)."""
