"""``bitsmith rpg``, ``bitsmith rpg-sweep``, ``bitsmith rpg-compress`` and ``bitsmith cost --run`` on digits:
files, the DoF shown, the fit, compression results, and one-line errors with exit code 2."""

from __future__ import annotations

import json

import pytest

from bitsmith import runs
from bitsmith.methods import rpg


@pytest.fixture(scope="module")
def rpg_run(tmp_path_factory):
    from bitsmith.cli.main import main

    out = tmp_path_factory.mktemp("rpg") / "run"
    main(["rpg", "--model", "lenet5", "--dof-ratio", "0.05", "--include", "all", "--epochs", "4", "--threads", "1",
          "--quiet", "--out", str(out)])
    return out


def test_rpg_trains_a_run_that_reports_its_dof(rpg_run, cli):
    model = runs.load_model(rpg_run)
    ring = rpg.get_ring(model)
    assert runs.final_run_metrics(rpg_run)["test_acc"] > 0.5
    code, stdout, _ = cli("cost", "--run", str(rpg_run), "--json")
    assert code == 0
    report = json.loads(stdout)
    not_generated = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("rpg_ring"))
    assert report["totals"]["dof"] == ring.dof + not_generated < report["totals"]["params"]
    assert (rpg_run / "report.md").is_file()


def test_rpg_compress_writes_pruning_and_quantization_results(rpg_run, cli):
    code, stdout, stderr = cli("rpg-compress", str(rpg_run), "--prune", "0.5", "--ring-bits", "8,2")
    assert code == 0, stderr
    result = json.loads((rpg_run / "compress.json").read_text())
    assert [row["fraction"] for row in result["prune"]] == [0.5]
    assert [row["bits"] for row in result["quantize"]] == [8, 2]
    assert all(row["integer_rel_error"] < 1e-9 for row in result["quantize"])
    assert result["quantize"][0]["test_acc"] > result["test_acc"] - 0.05  # 8-bit ring: almost no loss
    assert result["quantize"][1]["storage_bits"] < result["quantize"][0]["storage_bits"] < result["storage_bits"]
    assert "ring at 2 bits" in stdout


def test_rpg_sweep_fits_accuracy_against_log_dof(cli, tmp_path):
    out = tmp_path / "sweep"
    args = ["rpg-sweep", "--model", "lenet5", "--ratios", "0.01,0.1,1", "--include", "all", "--fit-range", "0.01,1",
            "--epochs", "2", "--threads", "1", "--quiet", "--out", str(out)]
    code, stdout, stderr = cli(*args)
    assert code == 0, stderr
    result = json.loads((out / "sweep.json").read_text())
    assert [p["ratio"] for p in result["points"]] == [0.01, 0.1, 1.0]
    assert len(result["reference_acc"]) == 1 and result["fit"]["points"] == 3
    assert 0.0 <= result["fit"]["r2"] <= 1.0 and "R² =" in stdout
    assert result["points"][0]["dof"] < result["points"][1]["dof"] < result["points"][2]["dof"]
    assert (out / "sweep.png").stat().st_size > 0
    assert runs.run_finished(out / "runs" / "r0.01-s0") and runs.run_finished(out / "runs" / "full-s0")
    code, _, stderr = cli(*[a for a in args if a != "--quiet"])  # finished runs are reused
    assert code == 0 and json.loads((out / "sweep.json").read_text())["points"] == result["points"]
    lines = [line.split("  ")[:2] for line in stderr.splitlines() if line.startswith("rpg sweep ")]
    assert [name for _, name in lines] == [f"full-s0: test acc {100 * result['reference_acc'][0]:.2f}%"] + [
        f"r{p['ratio']:g}-s0: test acc {100 * p['test_acc'][0]:.2f}%" for p in result["points"]]
    assert [count for count, _ in lines] == [f"rpg sweep {k}/4" for k in range(1, 5)]


@pytest.mark.parametrize("args, message", [
    (["rpg", "--dof", "10", "--dof-ratio", "0.1"], "exactly one"),
    (["rpg", "--dof-ratio", "2"], "dof_ratio"),
    (["rpg", "--model", "nope", "--dof-ratio", "0.1"], "unknown model"),
    (["rpg-sweep", "--ratios", "0.1,x"], "--ratios"),
    (["rpg-sweep", "--ratios", "0.1,3"], "dof_ratio"),
    (["rpg-sweep", "--fit-range", "0.1"], "--fit-range"),
    (["cost"], "--run RUN_DIR"),
])
def test_bad_input_is_one_line_with_exit_code_2(cli, tmp_path, args, message):
    code, _, stderr = cli(*args, "--out", str(tmp_path / "x")) if args[0] != "cost" else cli(*args)
    assert code == 2 and message in stderr and "Traceback" not in stderr, stderr


def test_rpg_compress_refuses_a_run_that_is_not_rpg(cli, float_run):
    code, _, stderr = cli("rpg-compress", str(float_run))
    assert code == 2 and "not an rpg run" in stderr
