"""The model-state interface: an erasure as an object that changes a model in place, reversibly.

Every erasure method produces a :class:`ModelState` (an EMBER embedding edit, a LoRA adapter, an RMU weight
change). A state can be applied and reverted, used as a context manager, saved and loaded, and says which
input tokens it touches. The evaluator reads that last fact to decide what it may reuse: a state that only
changes the input embeddings of some tokens leaves every input without those tokens exactly as it was.
States stack (:class:`StackedState`): an EMBER edit applied on top of an ELM adapter.
"""
from __future__ import annotations

import contextlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["ModelState", "StackedState", "StateError", "ALL_TOKENS", "components", "applied"]

#: ``touched_tokens`` of a state that may change the output on any input (LoRA, RMU, ...).
ALL_TOKENS = None


class StateError(RuntimeError):
    """Applying a state twice, reverting one that is not applied, or a state that does not fit the model."""


class ModelState(ABC):
    """A reversible change of a model's weights.

    Subclasses implement :meth:`_apply`, :meth:`_revert`, :attr:`touched_tokens`, :meth:`save` and
    :meth:`load`. The base class keeps track of the model it is applied to, so :meth:`revert` needs no
    argument and a state cannot be applied twice.
    """

    _applied_model: Any = None

    # ----------------------------------------------------------------- what subclasses provide
    @abstractmethod
    def _apply(self, model: Any) -> None:
        """Change ``model`` in place and remember what is needed to undo it exactly."""

    @abstractmethod
    def _revert(self, model: Any) -> None:
        """Undo :meth:`_apply` on ``model`` bit-exactly."""

    @property
    @abstractmethod
    def touched_tokens(self) -> frozenset[int] | None:
        """Token ids whose *input embeddings* are the only thing this state changes, or ``None``
        (:data:`ALL_TOKENS`) when the output may change on any input."""

    @abstractmethod
    def save(self, path: str | Path) -> Path:
        """Write the state to ``path`` atomically."""

    @classmethod
    @abstractmethod
    def load(cls, path: str | Path) -> "ModelState":
        """Read a state written by :meth:`save`."""

    # ----------------------------------------------------------------- the interface
    @property
    def applied(self) -> bool:
        return self._applied_model is not None

    def apply(self, model: Any) -> "ModelState":
        """Apply to ``model`` in place; returns ``self``."""
        if self.applied:
            raise StateError(f"{type(self).__name__} is already applied; revert it first.")
        self._apply(model)
        self._applied_model = model
        return self

    def revert(self, model: Any = None) -> "ModelState":
        """Undo :meth:`apply` exactly (on the model it was applied to)."""
        if not self.applied:
            raise StateError(f"{type(self).__name__} is not applied; nothing to revert.")
        if model is not None and model is not self._applied_model:
            raise StateError(f"{type(self).__name__} was applied to a different model; revert it there.")
        self._revert(self._applied_model)
        self._applied_model = None
        return self

    @contextlib.contextmanager
    def applied_to(self, model: Any) -> Iterator["ModelState"]:
        """Context manager: apply on enter, revert on exit (also on error)."""
        self.apply(model)
        try:
            yield self
        finally:
            self.revert()

    def touched_tokens_since(self, below: "ModelState | None") -> frozenset[int] | None:
        """What this state changes relative to the model inside ``below`` (``None``: the unedited model).

        A single state differs from the unedited model by :attr:`touched_tokens`; it is not comparable with any
        other state (``None`` = may differ anywhere)."""
        return self.touched_tokens if below is None else ALL_TOKENS

    def then(self, other: "ModelState") -> "StackedState":
        """This state with ``other`` applied on top of it."""
        return StackedState(self, other)


class StackedState(ModelState):
    """States applied in order (and reverted in reverse order), e.g. ``StackedState(elm_adapter, ember_edit)``."""

    def __init__(self, *states: ModelState) -> None:
        flat: list[ModelState] = []
        for s in states:
            if not isinstance(s, ModelState):
                raise TypeError(f"StackedState takes ModelState objects, got {type(s).__name__}.")
            flat.extend(s.states if isinstance(s, StackedState) else [s])
        if not flat:
            raise ValueError("StackedState needs at least one state.")
        if len({id(s) for s in flat}) != len(flat):
            raise ValueError("The same state object appears twice in the stack.")
        self.states: tuple[ModelState, ...] = tuple(flat)

    def _apply(self, model: Any) -> None:
        done: list[ModelState] = []
        try:
            for s in self.states:
                s.apply(model)
                done.append(s)
        except Exception:
            for s in reversed(done):
                s.revert()
            raise

    def _revert(self, model: Any) -> None:
        for s in reversed(self.states):
            s.revert()

    @property
    def touched_tokens(self) -> frozenset[int] | None:
        return _union(s.touched_tokens for s in self.states)

    def touched_tokens_since(self, below: ModelState | None) -> frozenset[int] | None:
        if below is None:
            return self.touched_tokens
        prefix = below.states if isinstance(below, StackedState) else (below,)
        if len(prefix) >= len(self.states) or any(a is not b for a, b in zip(prefix, self.states)):
            return ALL_TOKENS
        return _union(s.touched_tokens for s in self.states[len(prefix):])

    def save(self, path: str | Path) -> Path:
        """A folder with one file per state and ``stack.json`` naming each state's class, written atomically."""
        from .io import atomic_directory, atomic_write_json

        if Path(path).exists():
            raise FileExistsError(f"{path} exists; save a stacked state to a new folder.")

        def build(tmp: Path) -> None:
            entries = []
            for i, s in enumerate(self.states):
                name = f"{i:02d}_{type(s).__name__}"
                s.save(tmp / name)
                entries.append({"class": f"{type(s).__module__}:{type(s).__qualname__}", "file": name})
            atomic_write_json(tmp / "stack.json", {"format": "ember-stack-v1", "states": entries})

        return atomic_directory(path, build)

    @classmethod
    def load(cls, path: str | Path) -> "StackedState":
        import importlib
        import json

        path = Path(path)
        manifest = path / "stack.json"
        if not manifest.exists():
            raise FileNotFoundError(f"No stacked state at {path} (missing stack.json).")
        spec = json.loads(manifest.read_text())
        if spec.get("format") != "ember-stack-v1":
            raise ValueError(f"{manifest} is not an ember-stack-v1 manifest (format={spec.get('format')!r}).")
        states = []
        for entry in spec["states"]:
            module, _, qual = entry["class"].partition(":")
            klass = importlib.import_module(module)
            for part in qual.split("."):
                klass = getattr(klass, part)
            if not (isinstance(klass, type) and issubclass(klass, ModelState)):
                raise ValueError(f"{manifest}: {entry['class']!r} is not a ModelState class.")
            states.append(klass.load(path / entry["file"]))
        return cls(*states)

    def __repr__(self) -> str:
        return "StackedState(" + ", ".join(type(s).__name__ for s in self.states) + ")"


def components(state: ModelState | None) -> tuple[ModelState, ...]:
    """The single states ``state`` is made of, in the order they apply (``()`` for ``None``, the unedited model)."""
    if state is None:
        return ()
    return state.states if isinstance(state, StackedState) else (state,)


def applied(state: ModelState | None, model: Any) -> contextlib.AbstractContextManager:
    """``state.applied_to(model)``, or a context that changes nothing for ``None`` (the unedited model)."""
    return contextlib.nullcontext() if state is None else state.applied_to(model)


def _union(parts: Any) -> frozenset[int] | None:
    out: set[int] = set()
    for p in parts:
        if p is None:
            return ALL_TOKENS
        out |= p
    return frozenset(out)
