"""Views into the model that the chapters teach with, all through the bridge's hooks: the embedding matrix
(norms, nearest tokens, scaling), the logit lens (``logit_lens``), how far an edit moves the residual stream
(``residual``) and the attention that edited tokens receive (``attention``; ``viz.widgets.attention_view`` draws
one layer's patterns)."""
