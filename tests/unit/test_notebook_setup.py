"""The chapters' setup: the concept switch (``CONCEPT`` / ``$EMBER_CONCEPT``)."""
from __future__ import annotations

import pytest

from ember_utils.notebook import DEFAULT_CONCEPT, resolve_concept, setup_chapter


def test_concept_comes_from_the_argument_then_the_environment_then_the_default(monkeypatch):
    monkeypatch.delenv("EMBER_CONCEPT", raising=False)
    assert resolve_concept() == DEFAULT_CONCEPT == "harry_potter"
    monkeypatch.setenv("EMBER_CONCEPT", "association_football")
    assert resolve_concept() == "association_football"
    assert resolve_concept("world_war_ii") == "world_war_ii"
    ctx = setup_chapter(quiet=True)
    assert ctx.concept == "association_football" and "concept=association_football" in str(ctx)


def test_unknown_concept_is_refused_with_the_available_ones(monkeypatch):
    monkeypatch.setenv("EMBER_CONCEPT", "harry_poter")
    with pytest.raises(ValueError, match=r"EMBER_CONCEPT='harry_poter'.*available: \[.*'harry_potter'"):
        setup_chapter(quiet=True)
    with pytest.raises(ValueError, match=r"CONCEPT='dinosaurs'"):
        resolve_concept("dinosaurs")


def test_concept_card_describes_the_chosen_concept():
    from ember_utils.data import load_concept
    from ember_utils.notebook import concept_card

    text = concept_card(load_concept("association_football")).data
    assert "Association football" in text and "data/association_football/DATACARD.md" in text and "Tennis" in text
    assert "Harry Potter" not in text
