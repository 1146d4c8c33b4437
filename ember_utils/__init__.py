"""ember_utils: the tested package behind the EMBER concept-erasure book."""
from .models import DEFAULT_MODEL, PRESETS, load_model, preset_table

__version__ = "0.1.0"
__all__ = ["DEFAULT_MODEL", "PRESETS", "load_model", "preset_table", "__version__"]
