"""Shared helpers for benchmark scripts: machine description and result JSON.

Result fields: name, metric, value, baseline, baseline_value, ratio, unit, machine, command, date.
"""
from __future__ import annotations

import datetime as _dt
import os
import platform
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ember_utils.io import atomic_write_json  # noqa: E402

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def machine() -> str:
    """Short description of the machine a benchmark ran on."""
    try:
        import torch

        gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
        tv = torch.__version__
    except ImportError:  # pragma: no cover
        gpu, tv = "no GPU", "n/a"
    try:
        import psutil

        mem = f"{psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:  # pragma: no cover
        mem = "? RAM"
    return f"{platform.machine()} {os.cpu_count()} cores, {mem}, {gpu}, torch {tv}, {platform.python_version()}"


def write_result(name: str, metric: str, value: float, baseline: str, baseline_value: float, unit: str,
                 command: str, higher_is_better: bool = False, extra: dict[str, Any] | None = None) -> Path:
    """Write ``benchmarks/results/<name>.json``. ``ratio`` = baseline_value / value (time-like metrics)
    or value / baseline_value when ``higher_is_better`` (throughput-like metrics): >1 means we win."""
    ratio = (value / baseline_value) if higher_is_better else (baseline_value / value)
    record = {
        "name": name,
        "metric": metric,
        "value": value,
        "baseline": baseline,
        "baseline_value": baseline_value,
        "ratio": ratio,
        "unit": unit,
        "machine": machine(),
        "command": command,
        "date": _dt.date.today().isoformat(),
    }
    if extra:
        record["extra"] = extra
    return atomic_write_json(RESULTS_DIR / f"{name}.json", record)


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (GB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
