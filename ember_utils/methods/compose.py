"""EMBER as a plug-in: fix the embedding edit first, then train a base method (ELM, RMU) on the edited model.

The base method's frozen reference is the *edited* model (ELM's teacher is the edited model with its adapter
disabled; RMU's frozen activations come from the edited model), and the result is the stack (edit, base state):
applied edit first, reverted last.
"""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ..state import ModelState, StackedState

__all__ = ["train_on_top", "elm_trainer", "rmu_trainer"]


def train_on_top(model: Any, first: ModelState, train: Callable[[Any], tuple[ModelState, Any]]
                 ) -> tuple[StackedState, Any]:
    """Apply ``first`` (e.g. the EMBER edit at its chosen δ), run ``train(model)`` on the model inside it, revert
    ``first``; return ``(StackedState(first, trained_state), train_info)``. ``train`` must leave the model as it
    found it and return the state it trained (unapplied) and anything else to keep."""
    if first.applied:
        raise ValueError(f"{type(first).__name__} is already applied; pass it unapplied (train_on_top applies it).")
    with first.applied_to(model):
        state, info = train(model)
    if not isinstance(state, ModelState):
        raise TypeError(f"train must return (ModelState, info); got {type(state).__name__}.")
    if state.applied:
        raise ValueError("train returned an applied state; revert it before returning.")
    return StackedState(first, state), info


def elm_trainer(forget_texts: list[str], retain_texts: list[str], concept: str, config: Any = None,
                **kwargs: Any) -> Callable[[Any], tuple[ModelState, Any]]:
    """A ``train`` callable for :func:`train_on_top` that trains ELM (``methods.elm.train_elm``)."""
    from .elm import train_elm

    def train(model: Any) -> tuple[ModelState, Any]:
        res = train_elm(model, forget_texts, retain_texts, concept, config, **kwargs)
        return res.adapter, res

    return train


def rmu_trainer(forget_texts: list[str], retain_texts: list[str], config: Any = None,
                **kwargs: Any) -> Callable[[Any], tuple[ModelState, Any]]:
    """A ``train`` callable for :func:`train_on_top` that trains RMU (``methods.rmu.train_rmu``)."""
    from .rmu import train_rmu

    def train(model: Any) -> tuple[ModelState, Any]:
        res = train_rmu(model, forget_texts, retain_texts, config, **kwargs)
        return res.patch, res

    return train
