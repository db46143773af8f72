"""experiments/report.py --quick, and every experiment driver's smoke checks on its outputs.

The quick report runs each driver once with its smoke settings (``report.SECTIONS``); the
module fixture runs it once and every test here reads what it wrote: the report itself, and each
driver's CSV, table, figure and run directories. The drivers' smoke tests live here for that
reason (their argument-only tests stay in ``test_experiment_scripts.py`` and
``test_large_sparse_small_dense.py``).
"""

import csv
import json
import re
import shlex

import jax
import jax.numpy as jnp
import matplotlib.image
import numpy as np
import pytest

import jaxprune as jp
from experiments import (
    effective_sparsity,
    gradual_vs_oneshot,
    layer_collapse,
    report,
    rethinking,
    sanity_checks,
)
from experiments import (
    large_sparse_small_dense as lsd,
)
from jaxprune.training.provenance import provenance

N_PRUNABLE = 784 * 300 + 300 * 100 + 100 * 10  # LeNet-300-100 kernels: 266,200
LENET5_MACS = 24 * 24 * 25 * 20 + 8 * 8 * 25 * 20 * 50 + 800 * 500 + 500 * 10  # 2,293,000
LENET5_HALF_MACS = 24 * 24 * 25 * 10 + 8 * 8 * 25 * 10 * 25 + 400 * 250 + 250 * 10  # widths / 2
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    """``report.main(['--quick', '--out', tmp])``'s result (every driver ran once)."""
    out = tmp_path_factory.mktemp("report")
    return report.main(["--quick", "--out", str(out)])


def _run(quick, name):
    """(the driver run's output folder, what its ``main`` returned)."""
    entry = quick["runs"][name]
    return entry["dir"], entry["result"]


def _read_csv(path):
    with path.open() as f:
        reader = csv.DictReader(f)
        return tuple(reader.fieldnames), list(reader)


def _sections(text):
    """``{section number: its text}`` of report.md (split at the ``## `` headings)."""
    parts = re.split(r"^## (\d+)\. .*$", text, flags=re.M)
    return {int(parts[i]): parts[i + 1] for i in range(1, len(parts), 2)}


def _tables(text):
    """Every Markdown table in ``text`` as (header cells, rows of cells); checks the shape."""
    tables, block = [], []
    for line in [*text.splitlines(), ""]:
        if line.startswith("|"):
            block.append(line)
            continue
        if block:
            cells = [[c.strip() for c in row.strip().strip("|").split("|")] for row in block]
            header, separator, *rows = cells
            assert all(set(c) <= {"-"} and c for c in separator), block[1]
            assert all(len(row) == len(header) for row in rows), block
            tables.append((header, rows))
            block = []
    return tables


def _pct(value):
    return f"{100 * float(value):.2f}"


# --- the report ---------------------------------------------------------------------------------


def test_report_has_every_section_with_command_seeds_time_table_and_figure(quick):
    out = quick["out"]
    text = (out / "report.md").read_text()
    sections = _sections(text)
    assert list(sections) == [1, 2, 3, 4, 5, 6]
    titles = re.findall(r"^## \d+\. (.*)$", text, flags=re.M)
    assert titles == [s.title for s in report.SECTIONS]
    for number, section in zip(sections, report.SECTIONS, strict=True):
        body = sections[number]
        assert section.paper in body and section.claim in body
        runs = [r for r in section.runs if r.quick is not None]
        assert runs, section.key
        commands = re.findall(r"```bash\n(.*)\n```", body)
        assert len(commands) == len(runs)
        for run, line in zip(runs, commands, strict=True):
            entry = quick["runs"][run.name]
            words = shlex.split(line)
            assert words[:2] == ["python", f"experiments/{run.module}.py"]
            assert (report.REPO / words[1]).is_file()
            assert words[2:] == [*run.quick, "--out", str(out / "runs" / run.name)]
            assert words[2:] == entry["argv"] and line == entry["command"]
        seeds = re.findall(
            r"^Seeds: ([\d, ]+)\. Wall time: (\d+) s[^,]* in this invocation", body, re.M
        )
        assert seeds == [("0", f"{quick['runs'][r.name]['wall_s']:.0f}") for r in runs]
        assert len(_tables(body)) >= len(runs)


def test_report_header_has_versions_commit_devices_and_total_time(quick):
    text = (quick["out"] / "report.md").read_text()
    info = provenance()
    for name in ("jaxprune", "jax", "flax", "optax", "orbax-checkpoint", "numpy", "python"):
        assert info["versions"][name] and info["versions"][name] in text, name
    assert f"| jax / jaxlib | {jax.__version__} / " in text
    if info["git"] is not None:
        assert f"`{info['git']['commit']}`" in text
    assert f"{info['devices']['count']} x {info['devices']['kind']}" in text
    assert "Mode: quick" in text
    total = re.search(r"Total wall time: (\d+) s(?: \([\d.]+ min\))? in this invocation", text)
    assert total and int(total.group(1)) == round(quick["wall_s"])
    assert sum(r["wall_s"] for r in quick["runs"].values()) <= quick["wall_s"]


def test_report_figures_and_csvs_are_the_drivers_own_files(quick):
    out = quick["out"]
    text = (out / "report.md").read_text()
    linked = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", text)
    assert sorted(linked) == sorted(p.name for p in out.glob("*.png"))
    assert len(linked) == len(quick["runs"]) == 6  # one figure per driver run
    for name in linked:
        data = (out / name).read_bytes()
        assert data.startswith(PNG_SIGNATURE)
        image = matplotlib.image.imread(out / name)
        assert image.shape[0] > 100 and image.shape[1] > 100 and np.ptp(image[..., :3]) > 0
    data_links = re.findall(r"\[([^\]]+\.csv)\]\(\1\)", text)
    assert sorted(data_links) == sorted(p.name for p in out.glob("*.csv"))
    for name, entry in quick["runs"].items():
        assert entry["csvs"] and entry["pngs"]
        module = next(r.module for s in report.SECTIONS for r in s.runs if r.name == name)
        for copied in entry["csvs"] + entry["pngs"]:
            stem, suffix = copied[:-4], copied[-4:]
            source = module if stem == name else stem.removeprefix(f"{name}_")
            assert (out / copied).read_bytes() == (entry["dir"] / (source + suffix)).read_bytes()
    timings = json.loads((out / "runs" / "timings.json").read_text())
    assert {k: v["argv"] for k, v in timings.items()} == {
        k: v["argv"] for k, v in quick["runs"].items()
    }
    assert all(len(v["invocations_s"]) == 1 for v in timings.values())


def test_report_tables_match_the_drivers_csvs(quick):
    out = quick["out"]
    sections = _sections((out / "report.md").read_text())

    # 1. Layer collapse: one row per MT setting (1 seed).
    (header, rows), *_ = _tables(sections[1])
    _, csv_rows = _read_csv(out / "layer_collapse.csv")
    assert len(rows) == len(csv_rows) == 2
    for cells, row in zip(rows, csv_rows, strict=True):
        cell = dict(zip(header, cells, strict=True))
        fraction = float(row["min_keep_fraction"])
        assert cell["MT"] == (f"{100 * fraction:g}%" if fraction else "none")
        assert float(cell["sparsity"]) == float(row["sparsity"])
        assert cell["kept"] == f"{int(row['kept']):,}"
        for name, kept in layer_collapse.layer_kept(row).items():
            assert cell[f"{name} kept"] == f"{kept:,}"
        collapsed = row["collapsed_layers"]
        assert cell["collapsed"] == ("1/1 (" + collapsed + ")" if collapsed else "0/1")
        assert cell["eff. sparsity (%)"] == _pct(row["effective_sparsity"])
        assert cell["after pruning (%)"] == _pct(row["pruned_accuracy"])
        assert cell["fine-tuned (%)"] == _pct(row["test_accuracy"])

    # 2. Effective sparsity: one row per quota and compression (1 seed).
    (header, rows), *_ = _tables(sections[2])
    _, csv_rows = _read_csv(out / "effective_sparsity.csv")
    assert len(rows) == len(csv_rows) == 6
    for cells, row in zip(rows, csv_rows, strict=True):
        assert cells[0] == row["quota"] and cells[1] == f"{float(row['target_compression']):g}x"
        assert cells[3] == f"{float(row['direct_compression']):.1f}x"
        assert cells[4] == f"{float(row['effective_compression']):.1f}x"
        assert cells[5] == ("1/1" if row["disconnected"] == "True" else "0/1")

    # 3. Sanity checks: one accuracy per variant (1 seed, std 0).
    (header, rows), *_ = _tables(sections[3])
    _, csv_rows = _read_csv(out / "sanity_checks_snip.csv")
    assert header == ["variant", "s = 0.9"]
    assert rows == [[r["variant"], f"{_pct(r['test_accuracy'])} ± 0.00 (1)"] for r in csv_rows]

    # 4. Rethinking: large model and the two flows run.
    (header, rows), *_ = _tables(sections[4])
    _, csv_rows = _read_csv(out / "rethinking.csv")
    cell = dict(zip(header, rows[0], strict=True))
    assert len(rows) == 1 and cell["large model"] == f"{_pct(csv_rows[0]['large_accuracy'])} ± 0.00"
    assert cell["Fine-tuned"] == f"{_pct(csv_rows[0]['test_accuracy'])} ± 0.00"
    assert cell["Scratch-B"] == f"{_pct(csv_rows[1]['test_accuracy'])} ± 0.00"
    assert cell["Scratch-E"] == "-"

    # 5. Large-sparse vs small-dense.
    (header, rows), *_ = _tables(sections[5])
    _, (sparse, dense) = _read_csv(out / "large_sparse_small_dense.csv")
    assert rows == [
        [
            "0.9",
            "1",
            f"{int(sparse['nonzero_params']):,}",
            _pct(sparse["test_accuracy"]),
            f"{float(dense['width']):.4f}",
            f"{int(dense['nonzero_params']):,}",
            _pct(dense["test_accuracy"]),
        ]
    ]

    # 6. Gradual vs one-shot.
    (header, rows), *_ = _tables(sections[6])
    _, (gradual, one_shot) = _read_csv(out / "gradual_vs_oneshot.csv")
    difference = 100 * (float(gradual["test_accuracy"]) - float(one_shot["test_accuracy"]))
    assert rows == [
        [
            "0.9",
            f"{int(gradual['kept']):,}",
            gradual["steps"],
            "1",
            _pct(gradual["test_accuracy"]),
            _pct(one_shot["pruned_accuracy"]),
            _pct(one_shot["test_accuracy"]),
            f"{difference:+.2f}",
        ]
    ]


def test_quick_runs_use_the_drivers_smoke_test_arguments():
    # The drivers' smoke checks below read these runs: their arguments stay what they were.
    quick = {run.name: list(run.quick) for _, run in report.runs_of(quick=True)}
    assert quick["effective_sparsity"] == [
        *["--seeds", "1", "--compressions", "10", "100", "--search-compression", "0"]
    ]
    assert quick["sanity_checks_snip"] == [
        *["--smoke", "--sparsities", "0.9", "--seeds", "1"],
        *["--variants", "original", "shuffle_layerwise"],
    ]
    assert quick["rethinking"] == [
        *["--smoke", "--pruning", "l1_filter", "--seeds", "1"],
        *["--flows", "prune_finetune", "scratch_b"],
    ]
    assert quick["large_sparse_small_dense"] == ["--smoke", "--sparsities", "0.9"]
    assert quick["layer_collapse"] == ["--smoke", "--seeds", "1"]
    assert quick["gradual_vs_oneshot"] == ["--smoke", "--seeds", "1"]


def test_every_section_has_a_full_mode_run_and_the_names_are_unique():
    full = report.runs_of(quick=False)
    assert {s.key for s, _ in full} == {s.key for s in report.SECTIONS}
    names = [r.name for s in report.SECTIONS for r in s.runs]
    assert len(names) == len(set(names))
    for _, run in full:
        assert "--smoke" not in run.full and "--out" not in run.full


# --- experiments/layer_collapse.py ------------------------------------------------------------


def test_layer_collapse_masks_are_global_mp_of_the_one_shared_dense_net(quick):
    run_dir, result = _run(quick, "layer_collapse")
    fields, rows = _read_csv(run_dir / "layer_collapse.csv")
    assert fields == layer_collapse.CSV_COLUMNS
    assert [(float(r["min_keep_fraction"]), float(r["sparsity"])) for r in rows] == [
        (0.0, 0.99),
        (layer_collapse.MIN_KEEP_FRACTION, 0.99),
    ]
    dense_dir = run_dir / "runs" / "dense" / "seed_0"
    dense = jp.load_run(dense_dir)
    scores = jp.scores.magnitude(dense.variables["params"])
    points = sorted((run_dir / "runs" / "points").glob("*/seed_0"))
    assert len(points) == 2
    for row, returned in zip(rows, result["rows"], strict=True):
        sparsity, fraction = float(row["sparsity"]), float(row["min_keep_fraction"])
        # Exactly round((1 - s) * N) kept, split over the layers as Global MP (+ MT) splits it.
        assert int(row["kept"]) == round((1 - sparsity) * N_PRUNABLE) == 2_662
        kept = layer_collapse.layer_kept(row)
        assert sum(kept.values()) == int(row["kept"]) and int(row["total"]) == N_PRUNABLE
        min_keep = {"fraction_of_total": fraction} if fraction else None
        mask = jp.global_mask(scores, sparsity, min_keep=min_keep)
        assert kept == {name: int(jnp.sum(mask[name]["kernel"])) for name in kept}
        assert int(row["min_layer_kept"]) == min(kept.values())
        assert float(row["dense_accuracy"]) == dense.summary["test_accuracy"]
        assert returned["test_accuracy"] == pytest.approx(float(row["test_accuracy"]))
    for point in points:  # every point started from the one dense net
        config = json.loads((point / "config.json").read_text())
        assert config["init_from"] == f"{dense_dir}:dense"
    image = matplotlib.image.imread(run_dir / "layer_collapse.png")
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert (run_dir / "layer_collapse.md").read_text().strip() == result["table"]


def test_layer_collapse_happens_without_mt_and_mt_prevents_it(quick):
    run_dir, _ = _run(quick, "layer_collapse")
    _, (plain, with_mt) = _read_csv(run_dir / "layer_collapse.csv")
    # Without MT the input layer (smallest weights after 60 Adam steps) loses every weight.
    assert plain["collapsed_layers"] == "Dense_0" and int(plain["min_layer_kept"]) == 0
    assert int(plain["effective_kept"]) == 0 and float(plain["effective_sparsity"]) == 1.0
    # With MT every layer keeps at least its floor of round(0.0003 * N) = 80 weights.
    floor = round(layer_collapse.MIN_KEEP_FRACTION * N_PRUNABLE)
    assert floor == 80 and with_mt["collapsed_layers"] == ""
    assert min(layer_collapse.layer_kept(with_mt).values()) >= floor
    assert int(with_mt["effective_kept"]) > 0 and float(with_mt["effective_sparsity"]) < 1.0
    # The collapsed net answers the same for every input; the MT net does not.
    images = jax.random.uniform(jax.random.key(0), (8, 28, 28, 1))
    outputs = {}
    for row in (plain, with_mt):
        fraction = float(row["min_keep_fraction"])
        point = run_dir / "runs" / "points" / f"min_keep_fraction-{fraction}_sparsity-0.99"
        final = jp.load_run(point / "seed_0")
        outputs[fraction] = np.asarray(final.apply_fn(final.variables, images, train=False))
    assert np.ptp(outputs[0.0], axis=0).max() == 0.0
    assert np.ptp(outputs[layer_collapse.MIN_KEEP_FRACTION], axis=0).max() > 1e-3
    assert float(with_mt["test_accuracy"]) > float(plain["test_accuracy"])


def test_layer_collapse_bad_arguments_raise(tmp_path):
    with pytest.raises(ValueError, match="--min-keep-fraction must be in"):
        layer_collapse.main(["--min-keep-fraction", "0", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--sparsities must all be in"):
        layer_collapse.main(["--sparsities", "1.0", "--out", str(tmp_path)])
    config = layer_collapse.base_config(smoke=False, epochs=0.25, finetune_epochs=2.0)
    assert (config.training.epochs, config.training.steps) == (0.25, 0)
    assert (config.finetune.epochs, config.finetune.steps) == (2.0, 0)
    assert config.pruning.min_keep_fraction == 0.0 and config.flow == "prune_finetune"


# --- experiments/gradual_vs_oneshot.py --------------------------------------------------------


def test_gradual_and_one_shot_train_the_same_steps_to_the_same_kept_count(quick):
    run_dir, result = _run(quick, "gradual_vs_oneshot")
    fields, rows = _read_csv(run_dir / "gradual_vs_oneshot.csv")
    assert fields == gradual_vs_oneshot.CSV_COLUMNS
    assert [(r["method"], float(r["sparsity"]), r["seed"]) for r in rows] == [
        ("gradual", 0.9, "0"),
        ("one_shot", 0.9, "0"),
    ]
    steps = gradual_vs_oneshot.SMOKE_STEPS
    assert result["steps"] == steps == 30
    for row in rows:
        assert int(row["steps"]) == steps
        assert int(row["kept"]) == round(0.1 * N_PRUNABLE) == 26_620
    gradual_dir = run_dir / "runs" / "gradual" / f"s0.9_steps{steps}_seed0"
    gradual = json.loads((gradual_dir / "config.json").read_text())
    schedule = gradual["pruning"]["schedule"]
    assert gradual["flow"] == "gradual" and schedule["final_sparsity"] == 0.9
    assert 0 < schedule["begin_step"] < schedule["end_step"] <= steps
    (point,) = (run_dir / "runs" / "one_shot" / f"steps{steps}" / "points").glob("*/seed_0")
    one_shot = json.loads((point / "config.json").read_text())
    assert one_shot["flow"] == "prune_finetune" and one_shot["pruning"]["sparsity"] == 0.9
    assert one_shot["training"]["steps"] + one_shot["finetune"]["steps"] == steps
    assert one_shot["training"]["steps"] == round(steps * gradual_vs_oneshot.DENSE_FRACTION)
    assert rows[0]["pruned_accuracy"] == "nan" and 0 < float(rows[1]["pruned_accuracy"]) <= 1
    assert [r["test_accuracy"] for r in result["rows"]] == pytest.approx(
        [float(r["test_accuracy"]) for r in rows]
    )
    image = matplotlib.image.imread(run_dir / "gradual_vs_oneshot.png")
    assert image.shape[0] > 100 and image.shape[1] > 100


def test_gradual_window_scales_with_the_run():
    config = gradual_vs_oneshot.gradual_config(0.98, 2808, seed=1, smoke=False)
    schedule = config.pruning.schedule
    assert (schedule.begin_step, schedule.end_step, schedule.frequency) == (300, 1800, 75)
    assert (config.training.steps, config.seed, schedule.final_sparsity) == (2808, 1, 0.98)
    one_shot = gradual_vs_oneshot.one_shot_config(2808, smoke=False)
    assert (one_shot.training.steps, one_shot.finetune.steps) == (936, 1872)
    assert gradual_vs_oneshot.total_steps(6) == 2808
    with pytest.raises(ValueError, match="--seeds must be >= 1"):
        gradual_vs_oneshot.main(["--seeds", "0"])


# --- the other drivers' smoke checks, on the report's runs -------------------------------------


def test_effective_sparsity_experiment_writes_csv_and_plot(quick):
    tmp_path, result = _run(quick, "effective_sparsity")
    columns, rows = _read_csv(tmp_path / "effective_sparsity.csv")
    assert columns == effective_sparsity.CSV_COLUMNS
    assert [(r["quota"], r["seed"], float(r["target_compression"])) for r in rows] == [
        (quota, "0", c) for quota in ("uniform", "erk", "igq") for c in (10.0, 100.0)
    ]
    for row in rows:
        kept, eff_kept = int(row["kept"]), int(row["effective_kept"])
        assert int(row["total"]) == N_PRUNABLE
        # Exact counts: every layer keeps round((1 - s) * n), so the total is within 3 of k.
        assert abs(kept - N_PRUNABLE / float(row["target_compression"])) <= 3
        assert 0 < eff_kept <= kept and row["disconnected"] == "False"
        assert float(row["direct_compression"]) == pytest.approx(N_PRUNABLE / kept)
        assert float(row["effective_compression"]) == pytest.approx(N_PRUNABLE / eff_kept)
        assert float(row["effective_compression"]) >= float(row["direct_compression"])
    # Uniform random pruning at 100x leaves few input-output paths (the paper's ~1000x).
    uniform_100 = [
        r for r in rows if r["quota"] == "uniform" and r["target_compression"] == "100.0"
    ]
    assert float(uniform_100[0]["effective_compression"]) > 300
    assert result["mean_effective_compression"]["uniform"] == pytest.approx(
        float(uniform_100[0]["effective_compression"])
    )
    assert not (tmp_path / "effective_target.csv").exists()
    image = matplotlib.image.imread(tmp_path / "effective_sparsity.png")
    assert image.shape[:2] == (400, 1100) and np.ptp(image[..., :3]) > 0


def test_sanity_checks_smoke_writes_csv_plot_and_table(quick):
    tmp_path, result = _run(quick, "sanity_checks_snip")
    fields, rows = _read_csv(tmp_path / "sanity_checks.csv")
    assert fields == sanity_checks.CSV_COLUMNS
    assert [(r["variant"], float(r["sparsity"])) for r in rows] == [
        ("original", 0.9),
        ("shuffle_layerwise", 0.9),
    ]
    # LeNet-5 has 430,500 prunable weights; both variants keep exactly round(0.1 * N).
    assert [int(r["kept"]) for r in rows] == [43_050, 43_050]
    for row, returned in zip(rows, result["rows"], strict=True):
        assert float(row["test_accuracy"]) == pytest.approx(returned["test_accuracy"])
    assert "shuffle_layerwise" in result["table"] and "s=0.9" in result["table"]
    written = (tmp_path / "sanity_checks.md").read_text()
    assert written.startswith("snip on lenet5: sanity checks (test accuracy %")
    assert written.strip().endswith(result["table"])
    image = matplotlib.image.imread(tmp_path / "sanity_checks.png")
    assert image.shape[0] > 100 and image.shape[1] > 100


def test_rethinking_smoke_table_with_flops(quick):
    tmp_path, result = _run(quick, "rethinking")
    fields, rows = _read_csv(tmp_path / "rethinking.csv")
    assert fields == rethinking.CSV_COLUMNS
    assert [r["flow"] for r in rows] == ["prune_finetune", "scratch_b"]
    for row in rows:
        assert int(row["flops_dense"]) == LENET5_MACS
        assert int(row["flops"]) == LENET5_HALF_MACS
    # Same seed, same deterministic large-model training in both runs.
    assert rows[0]["large_accuracy"] == rows[1]["large_accuracy"]
    # Smoke: 30 dense steps; fine-tune 10; Scratch-B 30 * min(2, 2,293,000 / 646,500) = 60.
    assert [int(r["steps"]) for r in rows] == [40, 90]
    assert "-71.8%" in result["table"]  # FLOPs reduction of half the LeNet-5 widths
    assert (tmp_path / "rethinking.md").read_text().strip() == result["table"]
    image = matplotlib.image.imread(tmp_path / "rethinking.png")
    assert image.shape[0] > 100 and image.shape[1] > 100


def _lenet300_kernels(width: float) -> int:
    """LeNet-300-100 kernel count at ``width``, computed by hand (layers round(c * width))."""
    hidden = [max(1, round(300 * width)), max(1, round(100 * width))]
    return 784 * hidden[0] + hidden[0] * hidden[1] + hidden[1] * 10


def test_smoke_run_writes_matched_rows_and_plot(quick):
    tmp_path, result = _run(quick, "large_sparse_small_dense")
    columns, rows = _read_csv(tmp_path / "large_sparse_small_dense.csv")
    assert columns == lsd.CSV_COLUMNS
    assert [(r["model"], r["kind"], float(r["sparsity"]), r["seed"]) for r in rows] == [
        ("lenet300", "large_sparse", 0.9, "0"),
        ("lenet300", "small_dense", 0.9, "0"),
    ]
    sparse, dense = rows
    # Global MP + MT keeps exactly round(0.1 * 266,200) kernel weights.
    assert float(sparse["width"]) == 1.0
    assert int(sparse["nonzero_params"]) == round(0.1 * N_PRUNABLE) == 26_620
    # The small dense net's kernel count matches the sparse net's nonzeros within 3%.
    width = float(dense["width"])
    assert 0.08 < width < 0.15
    assert int(dense["nonzero_params"]) == _lenet300_kernels(width)
    assert abs(int(dense["nonzero_params"]) - 26_620) <= 0.03 * 26_620
    for row in rows:
        assert 0.0 <= float(row["test_accuracy"]) <= 1.0
    # Each run's summary agrees with the CSV (accuracy evaluated on the 1,024-example limit).
    assert [r["test_accuracy"] for r in result["rows"]] == pytest.approx(
        [float(r["test_accuracy"]) for r in rows]
    )
    for row in result["rows"]:
        assert row["test_accuracy"] * 1024 == pytest.approx(round(row["test_accuracy"] * 1024))
    image = matplotlib.image.imread(tmp_path / "large_sparse_small_dense.png")
    assert image.shape[0] > 100 and image.shape[1] > 100
    assert "0.90" in result["table"] and "26,620" in result["table"]
    assert (tmp_path / "large_sparse_small_dense.md").read_text().strip() == result["table"]
