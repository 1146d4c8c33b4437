"""Reading tables: intervals formatted next to estimates, flips with McNemar."""
from __future__ import annotations

import math

from ember_utils.eval.report import flip_table, interval_table, with_interval


def test_with_interval_formats_and_handles_missing_values():
    m = {"acc": 0.5, "acc_lo": 0.4, "acc_hi": 0.61, "ppl": 30.0, "bad": math.nan}
    assert with_interval(m, "acc") == "0.500 [0.400, 0.610]"
    assert with_interval(m, "ppl", digits=1) == "30.0"
    assert with_interval(m, "bad") == "—" and with_interval(m, "absent") == "—"


def test_interval_table_and_flip_table():
    a = {"name": "unedited", "acc": 0.5, "acc_lo": 0.4, "acc_hi": 0.6}
    b = {"name": "edit", "acc": 0.3, "acc_lo": 0.2, "acc_hi": 0.4, "n_concept": 10, "lost_concept": 3,
         "gained_concept": 1, "mcnemar_p_concept": 0.625}
    t = interval_table([a, b], ["acc"], labels={"acc": "accuracy"})
    assert list(t.index) == ["unedited", "edit"] and t.loc["edit", "accuracy"] == "0.300 [0.200, 0.400]"
    f = flip_table(b)
    assert list(f.index) == ["concept"] and f.loc["concept", "right → wrong"] == 3
