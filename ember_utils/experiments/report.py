"""The erasure report card: one self-contained HTML page per experiment run (every row, every attack with its
interval, the relearning curves, the configuration and the command that reproduces it)."""
from __future__ import annotations

import html
import json
from typing import Any

import pandas as pd

__all__ = ["report_html", "summary_frame"]

_SUMMARY = (("acc_before", "before attack"), ("acc_relearn_full", "relearn (full)"),
            ("acc_relearn_lora", "relearn (LoRA)"), ("probe_acc", "best probe"), ("prompting_acc", "best prompt"),
            ("bypass_acc", "token bypass"))


def _cell(row: dict[str, Any], key: str) -> str:
    v = row.get(key)
    if v is None or (isinstance(v, float) and v != v):
        return "–"
    lo, hi = row.get(f"{key}_lo"), row.get(f"{key}_hi")
    return f"{v:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None and hi is not None else "")


def summary_frame(record: dict[str, Any]) -> pd.DataFrame:
    """Rows × attacks of one record as display strings (value [95 % interval])."""
    out = []
    for method, row in record["rows"].items():
        line = {"method": method, **{label: _cell(row, key) for key, label in _SUMMARY}}
        line["probe layer"] = row.get("probe_layer", "–")
        line["best prompt attack"] = row.get("prompting_attack", "–")
        line["bypass spelling"] = row.get("bypass_strategy") or "–"
        out.append(line)
    return pd.DataFrame(out)


def report_html(record: dict[str, Any]) -> str:
    """The page for one ``robustness_seed*.json`` record."""
    esc = html.escape
    title = f"Erasure report card — {record['concept']}, seed {record['seed']} ({record['model']})"
    parts = [f"<!doctype html><html><head><meta charset='utf-8'><title>{esc(title)}</title>",
             "<style>body{font-family:sans-serif;max-width:1100px;margin:2em auto}table{border-collapse:collapse}"
             "td,th{border:1px solid #ccc;padding:3px 6px;font-size:90%}</style></head><body>",
             f"<h1>{esc(title)}</h1>"]
    if record.get("fast"):
        parts.append("<p><b>FAST smoke run: sizes shrunk, numbers are not results.</b></p>")
    parts.append(f"<p>Accuracy on the concept's test multiple-choice questions (chance 0.25), before and after each "
                 f"attack; 95 % bootstrap intervals over questions. EMBER δ = {esc(str(record.get('ember_delta')))}, "
                 f"{record.get('n_edit_tokens', 0)} edited tokens. Best-of values (probe layer, prompt, spelling) are "
                 f"chosen on the test questions: an attacker's optimistic estimate.</p>")
    parts.append(summary_frame(record).to_html(index=False, escape=True))
    for method, detail in record.get("details", {}).items():
        parts.append(f"<h2>{esc(method)}</h2>")
        for name, value in detail.items():
            if name.startswith("relearn"):
                curve = pd.DataFrame(value["curve"])
                parts.append(f"<h3>{esc(name)}: accuracy along the fine-tune</h3>" + curve.round(4).to_html(index=False))
                if value.get("recovery"):
                    parts.append("<p>Edited rows: " + esc(json.dumps({k: round(v, 4) for k, v in value["recovery"].items()}))
                                 + "</p>")
            else:
                frame = pd.DataFrame(value)
                keep = [c for c in frame.columns if c not in ("example", "table")]
                parts.append(f"<h3>{esc(name)}</h3>" + frame[keep].round(4).to_html(index=False))
    parts.append("<h2>Configuration</h2><pre>" + esc(json.dumps(record.get("configs", {}), indent=1)) + "</pre>")
    parts.append(f"<h2>Reproduce</h2><pre>{esc(record.get('command', ''))}</pre>")
    stages = pd.DataFrame(record.get("stages", []))
    if len(stages):
        parts.append("<h2>Stages</h2>" + stages.round(1).to_html(index=False))
    parts.append(f"<p>Total {record.get('seconds', 0):.0f} s.</p></body></html>")
    return "\n".join(parts)
