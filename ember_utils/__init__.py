"""ember_utils: the tested package behind the EMBER concept-erasure book."""
from .edit import EmbeddingEdit, build_edit, select_delta
from .factorize import SparseFactorization
from .models import DEFAULT_MODEL, PRESETS, load_model, preset_table

__version__ = "0.1.0"
__all__ = ["DEFAULT_MODEL", "PRESETS", "load_model", "preset_table", "SparseFactorization", "EmbeddingEdit",
           "build_edit", "select_delta", "__version__"]
