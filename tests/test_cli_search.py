"""``bitsmith search`` and ``bitsmith grid`` end to end on digits: the files they write, the budget met by the
retrained model's exact cost, resume, and one-line errors with exit code 2."""

from __future__ import annotations

import json

from bitsmith import runs
from bitsmith.cost import BitsAssignment
from bitsmith.searches import GRID_PLOT, GRID_RESULT, SEARCH_DIR, SEARCH_RESULT


def test_search_writes_the_search_the_bits_and_the_retrained_run(cli, float_run, tmp_path):
    out = tmp_path / "dnas"
    code, stdout, stderr = cli("search", "--from", str(float_run), "--budget-bops", "0.15", "--prune",
                               "--search-epochs", "3", "--epochs", "2", "--threads", "1", "--quiet",
                               "--out", str(out))
    assert code == 0, stderr
    assert "DNAS: test accuracy" in stdout
    result = json.loads((out / SEARCH_RESULT).read_text())
    cost = runs.run_cost(out)
    assert cost.total_bops == result["bops"] == result["retrained_bops"] <= result["budget_bops"]
    bits = BitsAssignment.load(out / "bits.json")
    assert bits.layers.keys() == {layer.name for layer in cost.layers}
    assert runs.run_finished(out / SEARCH_DIR) and runs.run_finished(out)
    assert (out / SEARCH_DIR / "search_trajectory.png").is_file()
    report = (out / "report.md").read_text()
    assert "DNAS search" in report and "search_trajectory.png" in report
    assert result["test_acc"] == runs.final_run_metrics(out)["test_acc"] > 0.5

    code, stdout, _ = cli("search", "--from", str(float_run), "--budget-bops", "0.15", "--prune", "--resume",
                          "--search-epochs", "3", "--epochs", "2", "--threads", "1", "--quiet", "--out", str(out))
    assert code == 0
    assert json.loads((out / SEARCH_RESULT).read_text())["bops"] == result["bops"]


def test_search_continues_an_interrupted_retraining(cli, float_run, tmp_path):
    out = tmp_path / "dnas"
    args = ["search", "--from", str(float_run), "--budget-bops", "0.25", "--search-epochs", "2", "--threads", "1",
            "--quiet", "--out", str(out)]
    assert cli(*args, "--epochs", "1")[0] == 0
    first = runs.read_metrics(out)
    config = json.loads((out / "config.json").read_text())
    config["train"]["epochs"] = 2  # as if the retraining had stopped after its first of two epochs
    (out / "config.json").write_text(json.dumps(config))
    code, _, stderr = cli(*args, "--resume")
    assert code == 0, stderr
    records = [r for r in runs.read_metrics(out) if r["type"] == "epoch"]
    assert [r["epoch"] for r in records] == [1, 2]
    assert records[0] == next(r for r in first if r["type"] == "epoch")


def test_search_refuses_bad_input_with_one_line(cli, float_run, tmp_path):
    cases = [
        (["--budget-bops", "0.001"], "below the cheapest configuration"),
        (["--budget-bops", "0.25", "--bits", "2,x"], "--bits"),
        (["--budget-bops", "0.25", "--bits", "1,4"], "weight_bits"),
        (["--budget-bops", "0.25", "--estimator", "reinforce"], "estimator"),
    ]
    for extra, message in cases:
        code, _, stderr = cli("search", "--from", str(float_run), *extra, "--quiet", "--out", str(tmp_path / "x"))
        assert code == 2 and message in stderr and "Traceback" not in stderr, stderr
        assert len(stderr.strip().splitlines()) == 1
    code, _, stderr = cli("search", "--from", str(tmp_path / "missing"), "--budget-bops", "0.25", "--out",
                          str(tmp_path / "y"))
    assert code == 2 and "no such run directory" in stderr
    code, _, stderr = cli("search", "--from", str(float_run), "--budget-bops", "0.25", "--resume", "--out",
                          str(tmp_path / "z"))
    assert code == 2 and "no search to continue" in stderr


def test_grid_trains_every_configuration_with_every_seed_and_reports_the_variances(cli, float_run, tmp_path):
    out = tmp_path / "grid"
    args = ["grid", "--from", str(float_run), "--budget-bops", "0.2", "--configs", "2", "--seeds", "0,1",
            "--epochs", "1", "--threads", "1", "--quiet", "--out", str(out)]
    code, stdout, stderr = cli(*args)
    assert code == 0, stderr
    assert "std across configurations" in stdout
    result = json.loads((out / GRID_RESULT).read_text())
    assert len(result["points"]) == 2 and all(len(p["test_acc"]) == 2 for p in result["points"])
    for point in result["points"]:
        assert result["budget_bops"] * 0.97 <= point["bops"] <= result["budget_bops"]
        for seed, acc in zip((0, 1), point["test_acc"], strict=True):
            run = out / "runs" / f"c{point['config']}-s{seed}"
            assert runs.train_config(run).seed == seed
            assert runs.final_run_metrics(run)["test_acc"] == acc
            assert runs.run_cost(run).total_bops == point["bops"]
    assert (out / GRID_PLOT).stat().st_size > 0
    code, _, stderr = cli(*[a for a in args if a != "--quiet"])  # finished runs are reused
    assert code == 0 and json.loads((out / GRID_RESULT).read_text())["points"] == result["points"]
    finished = [f"c{point['config']}-s{seed}: test acc {100 * acc:.2f}%" for point in result["points"]
                for seed, acc in zip((0, 1), point["test_acc"], strict=True)]
    lines = [line.split("  ")[:2] for line in stderr.splitlines() if line.startswith("grid ")]
    assert lines == [[f"grid {k}/4", run] for k, run in enumerate(finished, start=1)], stderr
    code, _, stderr = cli("grid", "--from", str(float_run), "--budget-bops", "0.2", "--seeds", "0", "--quiet",
                          "--out", str(tmp_path / "g2"))
    assert code == 2 and "two distinct seeds" in stderr


def test_search_from_scratch_retrains_from_scratch(cli, tmp_path):
    out = tmp_path / "scratch"
    code, _, stderr = cli("search", "--budget-bops", "0.3", "--estimator", "score", "--search-epochs", "2",
                          "--epochs", "2", "--threads", "1", "--quiet", "--out", str(out))
    assert code == 0, stderr
    result = json.loads((out / SEARCH_RESULT).read_text())
    assert result["retrain_from"] == "scratch" and result["estimator"] == "score"
    assert runs.read_config(out)["from"] is None and result["bops"] <= result["budget_bops"]
    code, _, stderr = cli("search", "--budget-bops", "0.3", "--retrain-from", "float", "--quiet", "--out",
                          str(tmp_path / "bad"))
    assert code == 2 and "needs a source run" in stderr
