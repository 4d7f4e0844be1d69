"""``bitsmith cost``: table, JSON, bits files, and one-line errors with exit code 2."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bitsmith.cost import BitsAssignment, LayerBits
from bitsmith.graph import trace
from bitsmith.zoo import create_model

LENET = ["cost", "--model", "lenet5", "--input", "1x16x16"]


def test_table_and_totals(cli):
    code, out, err = cli(*[*LENET, "--wbits", "4", "--abits", "8"])
    assert code == 0 and err == ""
    for text in ("features.0", "classifier.4", "233,640", "7,476,480", "GBOPs 0.0075", "23.42 KiB", "DoF 44,426"):
        assert text in out, text


def test_json_output_only(cli):
    code, out, _ = cli(*[*LENET, "--wbits", "4", "--abits", "8", "--json"])
    assert code == 0
    data = json.loads(out)
    assert data["model"] == "lenet5" and data["input_shape"] == [1, 16, 16]
    assert data["totals"]["bops"] == 233_640 * 32 and data["totals"]["params"] == 44_426
    assert [layer["name"] for layer in data["layers"]][:2] == ["features.0", "features.3"]


def test_only_wbits_leaves_activations_at_full_precision(cli):
    code, out, _ = cli(*["cost", "--model", "resnet20", "--input", "3x16x16", "--num-classes", "4", "--wbits", "2",
                         "--json"])
    data = json.loads(out)
    assert code == 0 and data["totals"]["bops"] == data["totals"]["macs"] * 2 * 32
    assert data["layers"][-1]["out_channels"] == 4


def _lenet_bits() -> BitsAssignment:
    graph = trace(create_model("lenet5", in_channels=1, image_size=16), (1, 16, 16))
    bits = BitsAssignment.uniform(graph, 4, 8)
    bits.layers["features.0"] = LayerBits(4, 8, keep=[0, 0, 1, 1, 1, 1])
    return bits


def test_bits_file(tmp_path, cli):
    path = _lenet_bits().save(tmp_path / "bits.json")
    code, out, _ = cli(*[*LENET, "--bits-file", str(path), "--json"])
    assert code == 0
    assert json.loads(out)["totals"]["macs"] == 169_640


def _bad_bits_file(tmp_path: Path) -> str:
    data = _lenet_bits().to_dict()
    data["layers"]["features.1"] = data["layers"].pop("features.0")
    path = tmp_path / "bad.json"
    path.write_text(json.dumps(data))
    return str(path)


ERRORS = [
    (["--input", "3x32"], "CxHxW"),
    (["--input", "axbxc"], "CxHxW"),
    (["--input", "0x16x16"], "CxHxW"),
    (["--wbits", "0"], "from 1 to 32"),
    (["--wbits", "33"], "got 33"),
    (["--abits", "4.5"], "got '4.5'"),
    (["--wbits", "4", "--bits-file", "BITS"], "not both"),
    (["--bits-file", "BAD"], "'features.1' is not a conv/linear layer"),
    (["--bits-file", "MISSING"], "bits file not found"),
    (["--model", "foo"], "unknown model 'foo'; available: cellnet, lenet5"),
    (["--scale-bits", "-1"], "scale_bits"),
]


@pytest.mark.parametrize(("extra", "message"), ERRORS)
def test_bad_input_is_one_line_and_exit_2(extra, message, tmp_path, cli):
    paths = {"BITS": str(_lenet_bits().save(tmp_path / "bits.json")), "BAD": _bad_bits_file(tmp_path),
             "MISSING": str(tmp_path / "missing.json")}
    argv = [*LENET, *[paths.get(a, a) for a in extra]]
    if "--model" in extra:
        argv = argv[:1] + argv[3:]
    code, out, err = cli(*argv)
    assert code == 2 and out == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert message in err


def test_installed_entry_point():
    exe = Path(sys.executable).with_name("bitsmith")
    if not exe.exists():
        pytest.skip("the bitsmith entry point is not installed (pip install -e .)")
    ok = subprocess.run([str(exe), "cost", "--model", "resnet20", "--input", "3x16x16", "--wbits", "4", "--abits",
                         "4", "--json"], capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert json.loads(ok.stdout)["totals"]["dof"] > 0
    bad = subprocess.run([str(exe), "cost", "--model", "resnet20", "--input", "3x32"], capture_output=True,
                         text=True, timeout=120)
    assert bad.returncode == 2 and bad.stderr.startswith("error: --input") and "Traceback" not in bad.stderr
