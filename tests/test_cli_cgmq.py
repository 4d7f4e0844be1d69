"""``bitsmith cgmq``: from a float run under a bound, resume through ``bitsmith train --resume``, bad input."""

from __future__ import annotations

import json

import pytest

from bitsmith import runs


def test_from_a_float_run_meets_the_bound_and_reports(float_run, tmp_path, cli):
    out = tmp_path / "cg"
    code, stdout, err = cli("cgmq", "--from", str(float_run), "--bop-budget", "0.25", "--relative-to", "w8a8",
                            "--granularity", "channel", "--epochs", "4", "--lr", "1e-3", "--threads", "1",
                            "--quiet", "--out", str(out))
    assert code == 0, err
    assert "CGMQ: test accuracy" in stdout and "BOPs (bound" in stdout
    last = [r for r in runs.read_metrics(out) if r["type"] == "epoch"][-1]
    assert last["bops"] <= last["bops_bound"] and last["bound_met"]
    assert [r for r in runs.read_metrics(out) if r["type"] == "eval"][-1]["acc"] > 0.7
    bits = json.loads((out / "bits.json").read_text())
    assert set(bits["layers"]) == {"features.0", "features.3", "classifier.0", "classifier.2", "classifier.4"}
    report = (out / "report.md").read_text()
    assert "## BOP bound" in report and "bops_trajectory.png" in report
    code, stdout, _ = cli("eval", str(out))
    assert code == 0


def test_train_resume_keeps_the_constraint(tmp_path, cli):
    out = tmp_path / "cg"
    assert cli("cgmq", "--bop-budget", "0.2", "--epochs", "2", "--threads", "1", "--quiet", "--out", str(out))[0] == 0
    config = json.loads((out / "config.json").read_text())
    config["train"]["epochs"] = 3  # extend the finished run by one epoch through resume
    (out / "config.json").write_text(json.dumps(config))
    code, _, err = cli("train", "--resume", str(out), "--quiet")
    assert code == 0, err
    records = [r for r in runs.read_metrics(out) if r["type"] == "epoch"]
    assert len(records) == 3 and all("bops" in r for r in records)
    assert records[-1]["bops"] <= records[-1]["bops_bound"]


@pytest.mark.parametrize("args,needle", [
    (("--bop-budget", "0.001"), "below the cheapest configuration"),
    (("--bop-budget", "0.3", "--granularity", "kernel"), "accepted: layer, channel, weight"),
    (("--bop-budget", "0.3", "--relative-to", "w4"), "accepted: w8a8, fp32, absolute"),
    (("--bop-budget", "0.3", "--bits", "2,x"), "expected comma-separated integers"),
    (("--bop-budget", "0.3", "--bits", "8,4"), "increasing widths"),
    (("--bop-budget", "0.3", "--factor", "0.5"), "greater than 1"),
    (("--bop-budget", "0.3", "--gate-step", "mean"), "gate_step 'mean' is not known; accepted: rms, max"),
    (("--bop-budget", "0.3", "--from", "{tmp}/missing"), "no such run directory"),
])
def test_bad_cgmq_input(tmp_path, cli, args, needle):
    args = tuple(a.replace("{tmp}", str(tmp_path)) for a in args)
    code, _, err = cli("cgmq", *args, "--out", str(tmp_path / "o"))
    assert code == 2 and needle in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o" / "checkpoint.safetensors").exists()
