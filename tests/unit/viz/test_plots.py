"""The sweep and before/after plots draw their intervals (and still draw without them)."""
from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from ember_utils.viz.plots import (  # noqa: E402
    before_after_plot,
    delta_sweep_plot,
    layer_accuracy_plot,
    relearning_curve_plot,
)


def test_delta_sweep_plot_bands_and_failed_gates():
    t = pd.DataFrame({"delta": [1.0, 10.0, 100.0], "efficacy": [0.1, 0.5, 0.9], "efficacy_lo": [0.0, 0.3, 0.7],
                      "efficacy_hi": [0.3, 0.7, 1.0], "specificity": [1.0, 0.95, 0.6], "coherence": [1, 0.9, 0.4],
                      "score": [0.2, 0.6, 0.0], "passes_gates": [True, True, False]})
    ax = delta_sweep_plot(t, 10.0)
    assert len(ax.collections) >= 1  # the efficacy band
    labels = [h.get_label() for h in ax.get_legend().legend_handles]
    assert "fails a gate" in labels and any("chosen δ = 10" in s for s in labels)
    edge = delta_sweep_plot(t.drop(columns=["efficacy_lo", "efficacy_hi", "passes_gates"]), 100.0, edge="upper")
    assert any("not identified" in h.get_label() for h in edge.get_legend().legend_handles)
    plt.close("all")


def test_before_after_plot_error_bars():
    f = pd.DataFrame({"benchmark": ["HP", "HP", "LOTR", "LOTR"], "state": ["unedited", "edit"] * 2,
                      "accuracy": [0.5, 0.3, 0.6, 0.6], "lo": [0.4, 0.2, 0.45, 0.45], "hi": [0.6, 0.4, 0.75, 0.75]})
    ax = before_after_plot(f)
    assert len(ax.patches) == 4 and len(ax.lines) >= 5  # 4 error bars' lines + the chance line
    before_after_plot(f.drop(columns=["lo", "hi"]))
    plt.close("all")


def test_relearning_and_layer_plots_draw_every_series():
    curve = pd.DataFrame({"tokens": [0, 50, 100], "acc_concept": [0.3, 0.4, 0.5]})
    fig = relearning_curve_plot({"unedited": curve, "EMBER": curve.assign(acc_concept=[0.2, 0.3, 0.45])})
    ax = fig.axes[0]
    assert [ln.get_label() for ln in ax.lines] == ["unedited", "EMBER", "chance"]
    layers = pd.DataFrame({"layer": [0, 1], "probe_acc": [0.3, 0.6], "probe_acc_lo": [0.2, 0.5],
                           "probe_acc_hi": [0.4, 0.7], "control_acc": [0.25, 0.26]})
    ax = layer_accuracy_plot(layers).axes[0]
    assert len(ax.collections) == 1 and [ln.get_label() for ln in ax.lines] == ["probe", "control", "chance"]
    plt.close("all")
