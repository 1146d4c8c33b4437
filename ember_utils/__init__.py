"""ember_utils: the tested package behind the EMBER book (robust concept erasure by editing token embeddings).

Subpackages mirror the book: ``eval`` (measuring a model state), ``methods`` (erasure methods, each producing a
``state.ModelState``), ``experiments`` (runner, results, baselines), ``interp`` (views into the model) and
``viz`` (figures). ``models`` loads the presets, ``data`` the datasets.
"""
from .methods.ember import EmbeddingEdit, SparseFactorization, build_edit, select_delta
from .models import DEFAULT_MODEL, PRESETS, load_model, preset_table
from .state import ModelState, StackedState

__version__ = "0.2.0"
__all__ = ["DEFAULT_MODEL", "PRESETS", "EmbeddingEdit", "ModelState", "SparseFactorization", "StackedState",
           "build_edit", "load_model", "preset_table", "select_delta", "__version__"]
