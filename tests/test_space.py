"""Tests of the GHN architecture space: sampler ranges, spec JSON, networks, splits, training stream, predefined."""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

import bitsmith
from bitsmith.errors import BitsmithError, ConfigError
from bitsmith.graph import trace
from bitsmith.zoo import (
    OPS,
    SPACE_VERSION,
    SPLITS,
    ArchSpec,
    CellSpec,
    build_network,
    create_model,
    describe,
    predefined,
    sample_architecture,
    split,
    train_architecture,
)

# sha1 of the keys of the first 5 architectures of each split, joined by commas: pins the splits of SPACE_VERSION 1
# so that a change of the sampler, of the key or of the platform shows up here.
SPLIT_DIGESTS = {
    "val": "695d5e61571c21dd1c27e285a7c5619bfae6a3b0",
    "test": "7a34564fa5ff7f18de357d21e5e735ff0fa53914",
    "wide": "f4866fc64ed5e2bc2eb8b91bf43787172212c91e",
    "deep": "a8863c5343a93fd6a73166be88360e675c2ea6a9",
}

# every op, "none" on a node with another edge, reduction skips, an identity skip, an unread node (cell 0, node 1)
ALL_OPS = ArchSpec(
    stem_channels=8,
    order="post",
    cells=(
        CellSpec(False, 8, (((0, "conv1x1"), (0, "conv3x3")), ((1, "conv5x5"), (0, "none")), ((1, "sep3x3"),))),
        CellSpec(True, 16, (((0, "skip"), (0, "maxpool3x3")), ((0, "sep5x5"), (1, "dil3x3")), ((2, "avgpool3x3"),))),
        CellSpec(True, 32, (((0, "skip"),), ((1, "skip"), (0, "conv3x3")))),
    ),
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny networks run fastest on one thread (and two threads on a busy machine can stall each other)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def n_reductions(spec: ArchSpec) -> int:
    return sum(cell.reduction for cell in spec.cells)


def shapes(model: nn.Module) -> dict[str, torch.Size]:
    return {name: value.shape for name, value in model.state_dict().items()}


# --- sampler ------------------------------------------------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(-(2**40), 2**40),
    cells=st.tuples(st.integers(1, 6), st.integers(0, 4)).map(lambda t: (t[0], t[0] + t[1])),
    nodes=st.tuples(st.integers(1, 3), st.integers(0, 3)).map(lambda t: (t[0], t[0] + t[1])),
    widths=st.tuples(st.integers(1, 70), st.integers(0, 70)).map(lambda t: (t[0], t[0] + t[1])),
    ops=st.lists(st.sampled_from(OPS), min_size=1, max_size=6, unique=True).filter(lambda o: o != ["none"]),
)
def test_sampler_respects_ranges(seed, cells, nodes, widths, ops) -> None:
    spec = sample_architecture(seed, cells=cells, nodes=nodes, widths=widths, ops=tuple(ops))
    assert spec == sample_architecture(seed, cells=cells, nodes=nodes, widths=widths, ops=tuple(ops))
    assert cells[0] <= len(spec.cells) <= cells[1]
    assert widths[0] <= spec.stem_channels <= widths[1]
    assert spec.order in ("post", "pre")
    n = len(spec.cells)
    expected = {n // 3, 2 * n // 3} if n >= 3 else ({1} if n == 2 else set())
    assert {i for i, cell in enumerate(spec.cells) if cell.reduction} == expected
    width = spec.stem_channels
    for cell in spec.cells:
        width = min(2 * width, widths[1]) if cell.reduction else width
        assert cell.channels == width and widths[0] <= cell.channels <= widths[1]
        assert nodes[0] <= len(cell.nodes) <= nodes[1]
        for j, node in enumerate(cell.nodes):
            assert 1 <= len(node) <= 2
            assert all(0 <= state <= j and op in ops and op != "none" for state, op in node)


def test_sampler_covers_the_space() -> None:
    specs = [sample_architecture(seed) for seed in range(150)]
    ops = {op for spec in specs for cell in spec.cells for node in cell.nodes for _, op in node}
    assert ops == set(OPS) - {"none"}
    assert {len(spec.cells) for spec in specs} == set(range(2, 9))
    assert {len(cell.nodes) for spec in specs for cell in spec.cells} == {1, 2, 3, 4}
    assert {spec.order for spec in specs} == {"post", "pre"}
    stems = [spec.stem_channels for spec in specs]
    assert set(stems) <= set(range(8, 65, 8)) and {8, 64} <= set(stems)
    assert sum(w <= 16 for w in stems) > sum(w >= 48 for w in stems)  # log-uniform: narrow ones are more common
    assert len({spec.key() for spec in specs}) == len(specs)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"ops": ("none",)}, "other than 'none'"),
        ({"ops": ("conv3x3", "conv7x7")}, "ops must be"),
        ({"ops": ()}, "ops must be"),
        ({"cells": (3, 2)}, "cells must be a pair"),
        ({"widths": (0, 8)}, "widths must be a pair"),
        ({"nodes": (1, 2, 3)}, "nodes must be a pair"),
    ],
)
def test_sampler_refuses_bad_ranges(kwargs: dict, fragment: str) -> None:
    with pytest.raises(ConfigError, match=fragment):
        sample_architecture(0, **kwargs)
    with pytest.raises(ConfigError, match="seed must be an integer"):
        sample_architecture(1.5)


# --- specs ----------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("spec", [ALL_OPS, sample_architecture(7), split("deep", 1)[0]])
def test_spec_json_round_trip(spec: ArchSpec) -> None:
    data = json.loads(json.dumps(spec.to_dict()))
    assert data["version"] == SPACE_VERSION
    again = ArchSpec.from_dict(data)
    assert again == spec and again.key() == spec.key() and hash(again) == hash(spec)
    assert len(spec.key()) == 40 and sample_architecture(8).key() != spec.key()


def _bad(path: str, value) -> dict:
    data = ALL_OPS.to_dict()
    if path == "stem_channels":
        data["stem_channels"] = value
    elif path == "channels":
        data["cells"][1]["channels"] = value
    elif path == "op":
        data["cells"][0]["nodes"][0][1][1] = value
    elif path == "state":
        data["cells"][0]["nodes"][0][0][0] = value
    elif path == "node":
        data["cells"][0]["nodes"][1] = value
    elif path == "top":
        data[value] = 1
    else:
        data[path] = value
    return data


@pytest.mark.parametrize(
    ("path", "value", "fragment"),
    [
        ("op", "conv7x7", "unknown op 'conv7x7'; accepted: conv1x1"),
        ("stem_channels", 0, "stem_channels must be a positive integer"),
        ("stem_channels", 8.0, "stem_channels must be a positive integer"),
        ("channels", -4, "channels must be a positive integer"),
        ("channels", True, "channels must be a positive integer"),
        ("state", 1, "state must be an integer in 0..0"),
        ("node", [[0, "none"]], "only 'none' edges"),
        ("node", [], "non-empty list"),
        ("order", "mid", "order must be one of post, pre"),
        ("version", 99, "version 99"),
        ("cells", [], "non-empty"),
        ("top", "depth", "unknown keys ['depth']"),
    ],
)
def test_from_dict_refuses_bad_input(path: str, value, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        ArchSpec.from_dict(_bad(path, value))
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_from_dict_refuses_non_dicts() -> None:
    for data in ([], "arch", {"stem_channels": 8, "order": "post"}, {**ALL_OPS.to_dict(), "cells": [{"x": 1}]}):
        with pytest.raises(ConfigError):
            ArchSpec.from_dict(data)


# --- networks -------------------------------------------------------------------------------------------------------


def _spatial_sizes(model: nn.Module, x: torch.Tensor) -> list[tuple[int, int]]:
    sizes: list[tuple[int, int]] = []
    hooks = [cell.register_forward_hook(lambda m, i, o: sizes.append(tuple(o.shape[2:]))) for cell in model.cells]
    with torch.no_grad():
        model.eval()(x)
    for hook in hooks:
        hook.remove()
    return sizes


@pytest.mark.parametrize(("size", "final"), [(16, (4, 4)), (28, (7, 7)), ((20, 11), (5, 3))])
def test_forward_shapes_and_reductions(size, final) -> None:
    h, w = (size, size) if isinstance(size, int) else size
    for spec in (ALL_OPS, *split("val", 3), split("deep", 1)[0]):
        model = build_network(spec, num_classes=7, in_channels=3, image_size=size)
        x = torch.randn(2, 3, h, w)
        with torch.no_grad():
            assert model.eval()(x).shape == (2, 7)
        expected, hw = [], (h, w)
        for cell in spec.cells:
            hw = tuple((v - 1) // 2 + 1 for v in hw) if cell.reduction else hw
            expected.append(hw)
        assert _spatial_sizes(model, x) == expected
        if n_reductions(spec) == 2:
            assert expected[-1] == final


def test_network_structure_follows_spec() -> None:
    model = build_network(ALL_OPS)
    assert model.stem[0].in_channels == 1 and model.fc.out_features == 10 and model.fc.in_features == 32
    cell = model.cells[1]
    skip, maxpool = cell.nodes[0]
    assert isinstance(skip[0], nn.Conv2d) and skip[0].stride == (2, 2) and skip[0].kernel_size == (1, 1)
    assert isinstance(maxpool, nn.MaxPool2d) and maxpool.stride == 2
    dil = cell.nodes[1][1]
    assert dil[0].dilation == (2, 2) and dil[0].groups == 16 and dil[0].stride == (1, 1)  # reads node 0: reduced
    assert isinstance(cell.nodes[2][0], nn.AvgPool2d) and not cell.nodes[2][0].count_include_pad
    assert len(model.cells[0].nodes[1]) == 1  # the "none" edge is dropped
    assert isinstance(model.cells[0].nodes[2][0], nn.Sequential)
    assert model.cells[0].leaves == [1, 2] and cell.leaves == [2]
    pre = build_network(ArchSpec(8, ALL_OPS.cells, "pre"))
    assert isinstance(pre.cells[0].nodes[0][0][0], nn.ReLU) and isinstance(pre.head[0], nn.ReLU)
    assert isinstance(model.cells[0].nodes[0][0][-1], nn.ReLU) and isinstance(model.head[0], nn.AdaptiveAvgPool2d)
    allowed = (nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.AvgPool2d, nn.Identity, nn.AdaptiveAvgPool2d,
               nn.Flatten, nn.Linear)
    assert all(isinstance(m, allowed) for m in pre.modules() if not list(m.children()))


def test_skip_at_stride_one_is_identity_and_leaves_sum() -> None:
    spec = ArchSpec(8, (CellSpec(False, 8, (((0, "skip"),), ((0, "skip"),))),), "post")
    model = build_network(spec).eval()
    cell = model.cells[0]
    assert isinstance(cell.nodes[0][0], nn.Identity) and cell.leaves == [0, 1]
    x = torch.randn(2, 8, 5, 5)
    with torch.no_grad():
        assert torch.allclose(cell(x), 2 * cell.preprocess(x))


@pytest.mark.parametrize("spec", [ALL_OPS, ArchSpec(8, ALL_OPS.cells, "pre"), train_architecture(3)])
def test_traces_with_fx_and_quantizes(spec: ArchSpec) -> None:
    model = build_network(spec)
    graph = trace(model, (1, 16, 16))
    assert graph.method == "fx"
    weights = [n for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))]
    assert graph.layer_names() == weights
    kinds = {node.kind for node in graph.nodes}
    assert {"conv", "bn", "add", "linear", "adaptive_avgpool"} <= kinds
    if spec.cells == ALL_OPS.cells:
        assert {"dwconv", "maxpool", "avgpool", "relu", "identity"} <= kinds
    qmodel = bitsmith.quantize(model, bitsmith.QConfig(weight_bits=4, act_bits=4))
    with torch.no_grad():
        assert qmodel.eval()(torch.rand(2, 1, 16, 16)).shape == (2, 10)


def test_create_model_rebuilds_the_architecture() -> None:
    spec = sample_architecture(11)
    model = create_model("cellnet", num_classes=5, in_channels=3, image_size=12, arch=spec.to_dict())
    assert ArchSpec.from_dict(model.bitsmith_spec["arch"]) == spec
    rebuilt = create_model(**json.loads(json.dumps(model.bitsmith_spec)))
    assert shapes(rebuilt) == shapes(model) and rebuilt.bitsmith_spec == model.bitsmith_spec
    built = build_network(spec, num_classes=5, in_channels=3, image_size=12)
    assert built.bitsmith_spec == model.bitsmith_spec and shapes(built) == shapes(model)
    default = create_model("cellnet", in_channels=1, image_size=16)
    assert default.bitsmith_spec["arch"] == {}
    assert shapes(default) == shapes(build_network(sample_architecture(0)))
    assert describe("cellnet").startswith("cellnet: ") and "arch={}" in describe("cellnet")


def test_build_is_seeded_and_refuses_bad_arch() -> None:
    torch.manual_seed(0)
    first = build_network(ALL_OPS).state_dict()
    torch.manual_seed(0)
    again = build_network(ALL_OPS).state_dict()
    assert all(torch.equal(first[k], again[k]) for k in first)
    with pytest.raises(BitsmithError, match="arch of cellnet must be dict"):
        create_model("cellnet", arch="conv3x3")
    with pytest.raises(ConfigError, match="unknown op"):
        create_model("cellnet", arch=_bad("op", "conv9x9"))
    with pytest.raises(ConfigError, match="spec must be an ArchSpec"):
        build_network(ALL_OPS.to_dict())


# --- splits and the training stream -----------------------------------------------------------------------------


def test_splits_are_pinned_and_deterministic() -> None:
    for name in SPLITS:
        keys = ",".join(spec.key() for spec in split(name, 5))
        assert hashlib.sha1(keys.encode()).hexdigest() == SPLIT_DIGESTS[name], name
    assert split("val") == split("val") and split("val", 30) == split("val")[:30]


def test_splits_are_distinct_disjoint_and_out_of_distribution() -> None:
    keys = {name: [spec.key() for spec in split(name)] for name in SPLITS}
    assert all(len(k) == 100 == len(set(k)) for k in keys.values())
    assert not set(keys["val"]) & set(keys["test"])
    val, wide, deep = split("val"), split("wide"), split("deep")
    assert min(s.stem_channels for s in wide) >= 64 > sum(s.stem_channels for s in val) / 100
    assert max(c.channels for s in wide for c in s.cells) == 128 and max(c.channels for s in val for c in s.cells) <= 64
    assert min(len(s.cells) for s in deep) >= 10 > max(len(s.cells) for s in val)
    assert max(c.channels for s in deep for c in s.cells) <= 64


def test_train_stream_avoids_held_out() -> None:
    held_out = {spec.key() for name in ("val", "test") for spec in split(name)}
    train = [train_architecture(i) for i in range(200)]
    assert not {spec.key() for spec in train} & held_out
    assert len({spec.key() for spec in train}) == 200 and train_architecture(5) == train[5]
    assert all(2 <= len(spec.cells) <= 8 and 8 <= spec.stem_channels <= 64 for spec in train)


@pytest.mark.parametrize(
    ("call", "fragment"),
    [
        (lambda: split("train"), "unknown split 'train'; accepted: val, test, wide, deep"),
        (lambda: split("val", 0), "positive integer"),
        (lambda: train_architecture(-1), "non-negative integer"),
    ],
)
def test_bad_split_arguments(call, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        call()
    assert fragment in str(info.value) and "\n" not in str(info.value)


def test_predefined_models_run() -> None:
    models = predefined(10, 1, 16)
    assert list(models) == ["lenet5", "vgg_small", "resnet20", "mobilenetv2"]
    for name, model in models.items():
        assert model.bitsmith_spec["name"] == name
        with torch.no_grad():
            assert model.eval()(torch.randn(1, 1, 16, 16)).shape == (1, 10)
