"""Which atoms the selection rule picks for a concept under two neutral corpora (e.g. before and after a corpus
change): the evidence that a neutral corpus does or does not make ordinary words "concept-only".

Command line (writes ``results/<model>/neutral_corpus_atoms.json`` atomically)::

    git show <commit>:data/common/neutral.jsonl > /tmp/old_neutral.jsonl
    python -m ember_utils.experiments.corpus_check --old /tmp/old_neutral.jsonl --old-label "<commit>" \\
        --concepts world_war_ii ancient_rome
"""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..io import atomic_write_json
from ..paths import results_dir

__all__ = ["selected_atom_tokens", "compare_corpora", "main"]


def selected_atom_tokens(model: Any, concept_texts: Sequence[str], neutral_texts: Sequence[str], concept: str,
                         seed: int = 0, top_k: int = 12, **fit: Any) -> dict[str, Any]:
    """Fit the concept's atoms against ``neutral_texts`` and describe what the default rule selects: per selected
    atom its ratio and top tokens, the number of edited tokens, and the vocabulary labels."""
    from ..methods.ember.pipeline import fit_concept_atoms

    atoms = fit_concept_atoms(model, concept_texts, neutral_texts, concept, seed=seed, describe_top=top_k, **fit)
    selected = atoms.selected_atoms
    sel = atoms.selection.set_index("atom")
    edit = atoms.edit() if selected else None
    return {
        "n_atoms": int(atoms.factorization.atoms_.shape[0]), "sparsity": float(atoms.factorization.sparsity),
        "n_neutral_sentences": len(neutral_texts),
        "vocab_labels": {k: int(v) for k, v in atoms.vocab.summary().items()},
        "selection_rule": atoms.rule.describe(),
        "selected_atoms": [{"atom": int(a), "ratio": float(sel.loc[a, "ratio"]),
                            "top_tokens": atoms.descriptions[int(a)]["top_tokens"][:top_k]} for a in selected],
        "top_candidates": [{"atom": int(r.atom), "ratio": float(r.ratio), "selected": bool(r.selected),
                            "top_tokens": atoms.descriptions.get(int(r.atom), {}).get("top_tokens", [])[:top_k]}
                           for r in atoms.selection.head(3).itertuples()],
        "n_edit_tokens": len(edit) if edit is not None else 0,
        "edit_tokens_sample": (edit.tokens[:40] if edit is not None else []),
    }


def compare_corpora(model: Any, concepts: Sequence[str], corpora: dict[str, Sequence[str]], seed: int = 0,
                    **fit: Any) -> dict[str, dict[str, Any]]:
    """``{concept: {corpus label: selected_atom_tokens(...)}}`` for every concept and corpus."""
    from ..data import load_concept

    out: dict[str, dict[str, Any]] = {}
    for slug in concepts:
        c = load_concept(slug)
        out[slug] = {label: selected_atom_tokens(model, c.sentences, texts, slug, seed=seed, **fit)
                     for label, texts in corpora.items()}
    return out


def _train_texts(path: Path) -> list[str]:
    texts = []
    for i, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            rec = json.loads(line)
            if "text" not in rec or "split" not in rec:
                raise ValueError(f"{path}:{i}: a neutral record needs 'text' and 'split'.")
            if rec["split"] == "train":
                texts.append(rec["text"])
    if not texts:
        raise ValueError(f"{path} has no train sentences.")
    return texts


def main(argv: Sequence[str] | None = None) -> int:
    from ..data import load_common
    from ..models import DEFAULT_MODEL, load_model

    ap = argparse.ArgumentParser(prog="python -m ember_utils.experiments.corpus_check",
                                 description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, type=Path, help="the other neutral.jsonl (its train split is used)")
    ap.add_argument("--old-label", default="old", help="how to name the other corpus in the output")
    ap.add_argument("--concepts", nargs="+", default=["world_war_ii", "ancient_rome", "harry_potter"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--model", default=DEFAULT_MODEL)
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    model = load_model(args.model)
    corpora = {args.old_label: _train_texts(args.old), "current": load_common().neutral_texts("train")}
    table = compare_corpora(model, args.concepts, corpora, seed=args.seed)
    record = {"model": args.model, "seed": args.seed, "date": _dt.datetime.now().isoformat(timespec="seconds"),
              "command": "python -m ember_utils.experiments.corpus_check " + " ".join(sys.argv[1:] if argv is None
                                                                                       else argv),
              "seconds": round(time.perf_counter() - t0, 1), "concepts": table}
    path = atomic_write_json(results_dir(args.model) / "neutral_corpus_atoms.json", record)
    for slug, per in table.items():
        for label, r in per.items():
            atoms = "; ".join(f"#{a['atom']} ({a['ratio']:.1f}): {' '.join(map(repr, a['top_tokens'][:8]))}"
                              for a in r["selected_atoms"]) or "none; best candidates " + "; ".join(
                f"#{a['atom']} ({a['ratio']:.1f}): {' '.join(map(repr, a['top_tokens'][:6]))}"
                for a in r["top_candidates"])
            print(f"{slug} [{label}] {r['n_edit_tokens']} tokens — {atoms}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
