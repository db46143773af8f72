"""Plots read well: labelled prune / mask-update steps, test loss, legends off the data, sparsity
on a log compression axis labelled in percent, direct vs effective bars told apart."""

import matplotlib
import matplotlib.pyplot as plt
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.text import Text

from jaxprune.training import plots

PRUNE_FINETUNE = [
    *(
        {"step": s, "phase": "dense", "train_loss": 1.0 / s, "train_accuracy": 0.5}
        for s in (10, 20)
    ),
    {"step": 20, "phase": "dense", "test_loss": 0.1, "test_accuracy": 0.9},
    {"step": 20, "phase": "pruned", "sparsity": 0.98, "test_loss": 2.0, "test_accuracy": 0.4},
    *({"step": s, "phase": "finetune", "train_loss": 1.0, "train_accuracy": 0.6} for s in (30, 40)),
    {"step": 40, "phase": "finetune", "test_loss": 0.2, "test_accuracy": 0.8},
]
GRADUAL = [
    *({"step": s, "phase": "gradual", "train_loss": 1.0, "train_accuracy": 0.5} for s in (10, 20)),
    {"step": 11, "phase": "gradual", "target_sparsity": 0.5, "achieved_sparsity": 0.5, "kept": 5},
    {"step": 21, "phase": "gradual", "target_sparsity": 0.9, "achieved_sparsity": 0.9, "kept": 1},
]
LAYERS = {
    "Dense_0/kernel": {
        "kept": 8,
        "total": 100,
        "sparsity": 0.92,
        "effective_kept": 1,
        "effective_sparsity": 0.99,
    },
    "Dense_1/kernel": {"kept": 0, "total": 10, "sparsity": 1.0, "effective_sparsity": 1.0},
}


@pytest.fixture
def figures(monkeypatch):
    """The figures the plot functions render (captured as ``_save`` closes them)."""
    captured = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig: (captured.append(fig), close(fig)))
    return captured


def _texts(fig) -> list[str]:
    return [t.get_text() for t in fig.findobj(Text) if t.get_visible() and t.get_text()]


def _assert_legends_cover_no_data(fig):
    renderer = FigureCanvasAgg(fig).get_renderer()
    legends = [ax.get_legend() for ax in fig.axes if ax.get_legend() is not None]
    assert legends
    for legend in legends:
        box = legend.get_window_extent(renderer)
        for ax in fig.axes:
            assert not box.overlaps(ax.get_window_extent(renderer)), "legend over an axes"


def test_learning_curve_labels_the_prune_step_and_shows_test_loss(tmp_path, figures):
    plots.plot_learning_curve(PRUNE_FINETUNE, tmp_path / "lc.png")
    (fig,) = figures
    assert "prune 98%" in _texts(fig)
    loss_ax = fig.axes[0]
    assert loss_ax.get_yscale() == "log"
    labels = [line.get_label() for line in loss_ax.get_lines()]
    assert {"train loss", "test loss", "test loss right after pruning"} <= set(labels)
    test_line = loss_ax.get_lines()[labels.index("test loss")]
    assert list(test_line.get_ydata()) == [0.1, 2.0, 0.2]
    _assert_legends_cover_no_data(fig)
    assert matplotlib.image.imread(tmp_path / "lc.png").shape == (400, 1100, 4)


def test_learning_curve_marks_gradual_mask_updates(tmp_path, figures):
    plots.plot_learning_curve(GRADUAL, tmp_path / "lc.png")
    texts = _texts(figures[0])
    assert {"50%", "90%", "2 mask updates: sparsity after the update"} <= set(texts)
    steps = {line.get_xdata()[0] for line in figures[0].axes[0].get_lines()[1:]}
    assert steps == {11, 21}  # one vertical line per update


def test_sparsity_bars_use_a_log_compression_axis_in_percent(tmp_path, figures):
    plots.plot_layer_sparsity(LAYERS, tmp_path / "ls.png")
    plots.plot_effective_sparsity(LAYERS, tmp_path / "es.png")
    for fig in figures:
        ax = fig.axes[0]
        assert ax.get_yscale() == "log"
        ticks = [t.get_text() for t in ax.get_yticklabels()]
        assert {"0%", "90%", "99%", "100%"} <= set(ticks)  # 100%: nothing kept
        heights = [bar.get_y() + bar.get_height() for bar in ax.patches]
        assert heights[0] == pytest.approx(1 / 0.08)  # 92% = 12.5x
    direct, effective = figures[1].axes[0].containers
    assert direct[0].get_facecolor() != effective[0].get_facecolor()
    assert effective[0].get_hatch() and not direct[0].get_hatch()
    assert effective[0].get_y() + effective[0].get_height() == pytest.approx(100)  # 99%
    assert [t.get_text() for t in figures[1].axes[0].get_legend().get_texts()] == [
        "direct",
        "effective",
    ]
    _assert_legends_cover_no_data(figures[1])


def test_percent_labels_keep_sparsities_near_one_apart():
    got = [plots._percent(s) for s in (0.0, 0.468, 0.9, 0.92, 0.9437, 0.99, 0.99768, 1.0)]
    assert got == ["0%", "46.8%", "90%", "92%", "94.4%", "99%", "99.77%", "100%"]
