"""`bitsmith compare` / `bitsmith report` on run directories made by short real runs: grouping over seeds without
knowing the method, settings named by what varies, the Pareto front, the written files, one-line errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from bitsmith import runs
from bitsmith.quant import QConfig
from bitsmith.report import compare_runs, group_points, pareto_front


@pytest.fixture(scope="module")
def ptq_runs(tmp_path_factory, float_run):
    """PTQ runs of the shared float LeNet-5: W8A8 with calibration seeds 0 and 1, W2A2 with seed 0."""
    root = tmp_path_factory.mktemp("ptq")
    made = {}
    for name, bits, seed in (("w8-s0", 8, 0), ("w8-s1", 8, 1), ("w2-s0", 2, 0)):
        runs.quantize_run(float_run, QConfig(weight_bits=bits, act_bits=bits), root / name, seed=seed, ptq=True,
                          calib_batches=2, num_threads=1)
        made[name] = root / name
    return made


def test_runs_group_over_seeds_and_are_labelled_by_what_varies(float_run, ptq_runs, tmp_path) -> None:
    result = compare_runs([float_run, *ptq_runs.values()], tmp_path / "cmp")
    groups = {(g["command"], g["setting"]): g for g in result["groups"]}
    assert set(groups) == {("train", "-"), ("quantize", "quantize.act_bits=8, quantize.weight_bits=8"),
                           ("quantize", "quantize.act_bits=2, quantize.weight_bits=2")}
    w8 = groups[("quantize", "quantize.act_bits=8, quantize.weight_bits=8")]
    w2 = groups[("quantize", "quantize.act_bits=2, quantize.weight_bits=2")]
    fp = groups[("train", "-")]
    assert w8["n"] == 2 and w2["n"] == 1 and fp["n"] == 1
    accs = [runs.final_run_metrics(ptq_runs[k])["test_acc"] for k in ("w8-s0", "w8-s1")]
    assert w8["acc_mean"] == pytest.approx(sum(accs) / 2)
    assert fp["bops"] > w8["bops"] > w2["bops"]  # 32x32 > 8x8 (first/last at 8) > 2x2 in the middle
    assert w2["pareto"]  # the cheapest row is always on the front
    saved = json.loads((tmp_path / "cmp" / "compare.json").read_text())
    assert [g["setting"] for g in saved] == [g["setting"] for g in result["groups"]]
    assert (tmp_path / "cmp" / "pareto.png").stat().st_size > 1000
    assert "| quantize | lenet5 | digits |" in (tmp_path / "cmp" / "compare.md").read_text()


def test_pareto_front_marks_only_undominated_rows(float_run, ptq_runs) -> None:
    from bitsmith.report import run_point

    points = [run_point(r) for r in (float_run, ptq_runs["w8-s0"], ptq_runs["w2-s0"])]
    groups = group_points(points)
    front = pareto_front(groups)
    for g, on in zip(groups, front, strict=True):
        better = [o for o in groups if o is not g and o.bops <= g.bops and o.acc[0] >= g.acc[0]
                  and (o.bops < g.bops or o.acc[0] > g.acc[0])]
        assert on == (not better)


def test_cli_compare_and_report(cli, float_run, ptq_runs, tmp_path) -> None:
    code, stdout, stderr = cli("compare", str(float_run), str(ptq_runs["w8-s0"]), "--out", str(tmp_path / "c"))
    assert code == 0, stderr
    assert "Pareto" in stdout and (tmp_path / "c" / "compare.md").is_file()
    code, stdout, stderr = cli("report", str(ptq_runs["w2-s0"]))
    assert code == 0, stderr
    assert "Cost per sample" in (ptq_runs["w2-s0"] / "report.md").read_text()
    code, _, stderr = cli("compare", str(tmp_path / "nothing"))
    assert code == 2 and "no such run directory" in stderr and "Traceback" not in stderr


def test_report_html_and_bit_width_chart_of_a_quantized_run(ptq_runs) -> None:
    from bitsmith.report.run_report import BITS_FILE, HTML_FILE

    run = ptq_runs["w2-s0"]
    runs.write_run_report(run)
    markdown = (run / "report.md").read_text()
    page = (run / HTML_FILE).read_text()
    assert "## Bit widths per layer" in markdown and f"![bit widths]({BITS_FILE})" in markdown
    assert (run / BITS_FILE).stat().st_size > 1000
    assert page.startswith("<!DOCTYPE html>") and f'src="{BITS_FILE}"' in page
    assert page.count("<table>") == markdown.count("\n| --- ") and "<h2>Cost per sample (per layer)</h2>" in page


def test_markdown_subset_renders_escaped() -> None:
    from bitsmith.report import markdown_to_html

    page = markdown_to_html("# T <x>\n\npara **bold** `a<b`\n\n| a | b |\n| --- | ---: |\n| 1 | 2 |\n\n```\n<raw>\n```")
    assert "<h1>T &lt;x&gt;</h1>" in page and "<strong>bold</strong>" in page and "<code>a&lt;b</code>" in page
    assert '<td>1</td><td class="num">2</td>' in page and "&lt;raw&gt;" in page and "<raw>" not in page


def test_learned_widths_are_costed_from_the_trained_checkpoint(tmp_path) -> None:
    """A CGMQ run's BOPs in its report and in `compare` are those of its learned gates, not of the untrained model."""
    from bitsmith.methods.cgmq import CGMQConfig

    out = tmp_path / "cgmq"
    base = runs.TrainConfig(model="lenet5", dataset="digits", num_threads=1)
    metrics = runs.method_run("cgmq", CGMQConfig(bop_budget=0.1, relative_to="w8a8", granularity="channel"), out,
                              base=base, quiet=True, epochs=1, lr=1e-3)
    assert runs.run_cost(out).total_bops == pytest.approx(metrics["bops"])
    assert runs.run_cost(out).total_bops <= metrics["bops_bound"]
    runs.write_run_report(out)
    assert "Filters of" in (out / "report.md").read_text()


def test_ring_and_prediction_sections(tmp_path) -> None:
    from bitsmith.methods.rpg import RPGConfig

    out = tmp_path / "rpg"
    base = runs.TrainConfig(model="lenet5", dataset="digits", num_threads=1)
    runs.method_run("rpg", RPGConfig(dof_ratio=0.1), out, base=base, quiet=True, epochs=1)
    runs.write_run_report(out)
    text = (out / "report.md").read_text()
    assert "## RPG ring" in text and "free scalars generates" in text and (out / "layer_params.png").is_file()
    assert "## Bit widths per layer" not in text


def test_learned_fields_and_sweep_labels_do_not_split_seeds() -> None:
    """Widths a search learned differ between seeds but are outcomes, not settings: its seeds form one row."""
    from bitsmith.report.compare import RunPoint, _flatten

    def point(seed: int, widths: list[int], label: tuple[str, str] | None = None) -> RunPoint:
        config = {"command": "search", "train": {"model": "lenet5", "seed": seed}, "learned": ["quantize"],
                  "search": {"budget": 0.25},
                  "model_transforms": [{"name": "quantize", "config": {"overrides": {"fc": widths}}}]}
        return RunPoint(run=f"r{seed}", command="search", model="lenet5", dataset="digits", seed=seed, acc=0.9,
                        bops=10, size_kib=1.0, dof=5, fields=_flatten(config), label=label)

    groups = group_points([point(0, [2, 4]), point(1, [8, 2])])
    assert len(groups) == 1 and groups[0].setting == "-" and len(groups[0].points) == 2
    labelled = group_points([point(0, [2], ("dnas", "budget0.25")), point(1, [4], ("dnas", "budget0.25"))])
    assert [(g.command, g.setting, len(g.points)) for g in labelled] == [("dnas", "budget0.25", 2)]


def test_a_sweep_group_is_labelled_by_its_grid_point_or_its_own_options(tmp_path) -> None:
    """A sweep group's run is described by the options it gave (not by model, data or epochs), in one format with
    or without a grid: the grid point the marker records first and whole (epochs too when the grid varies them);
    an older marker without the grid keeps its folder's name, one without settings reads "-"."""
    from bitsmith.report.compare import SWEEP_MARK, _sweep_label

    def marker(name: str, run_id: str, options: dict | None, grid: dict | None = None) -> Path:
        run = tmp_path / name
        run.mkdir()
        body = {"id": run_id} if options is None else {"id": run_id, "settings": {"options": options}}
        if grid is not None:
            body["grid"] = grid
        (run / SWEEP_MARK).write_text(json.dumps(body))
        return run

    assert _sweep_label(marker("g", "lsq/wbits4-abits4/seed0", {"per-channel": False, "epochs": 10, "wbits": 4,
                                                                 "abits": 4}, {"wbits": 4, "abits": 4})) == (
        "lsq", "wbits=4, abits=4, no-per-channel")
    assert _sweep_label(marker("h", "fp32/epochs5-modellenet5/seed0", {"epochs": 5, "model": "lenet5"},
                               {"epochs": 5, "model": "lenet5"})) == ("fp32", "epochs=5")
    assert _sweep_label(marker("i", "fp32/modellenet5/seed0", {"model": "lenet5"}, {"model": "lenet5"})) == (
        "fp32", "-")

    assert _sweep_label(marker("a", "directq/seed0", {"wbits": 2, "abits": 2, "epochs": 10})) == (
        "directq", "wbits=2, abits=2")
    assert _sweep_label(marker("b", "ptq/seed1", {"model": "lenet5", "wbits": 8, "ptq": True, "bn": False})) == (
        "ptq", "wbits=8, ptq, no-bn")
    assert _sweep_label(marker("c", "fp32/seed0", {"model": "lenet5", "dataset": "digits", "epochs": 30})) == (
        "fp32", "-")
    assert _sweep_label(marker("d", "lsq/wbits4-abits4/seed0", {"wbits": 4, "abits": 4, "epochs": 10})) == (
        "lsq", "wbits4-abits4")
    assert _sweep_label(marker("e", "rpg/seed2", None)) == ("rpg", "-")
