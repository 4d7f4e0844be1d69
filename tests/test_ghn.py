"""The graph hypernetwork: encoding, prediction, the GHN file, training through the shared Trainer, evaluation."""

from __future__ import annotations

import json
import math

import pytest
import torch
from torch import nn

from bitsmith import zoo
from bitsmith.engine import TrainConfig, Trainer, evaluate_model, load_split, recalibrate_bn
from bitsmith.errors import BitsmithError, CheckpointError, UnsupportedLayerError
from bitsmith.methods.ghn import (
    EvalConfig,
    GHNConfig,
    GHNTrainConfig,
    GraphHyperNetwork,
    compute_baselines,
    encode,
    evaluate_ghn,
    load_ghn,
    predict,
    predict_many,
    save_ghn,
    schedule,
    shipped,
    steps_worth,
    train_ghn,
)
from bitsmith.methods.ghn.encoders import Batch, GatedGNN
from bitsmith.methods.ghn.encoding import FEATURES, KINDS
from bitsmith.methods.ghn.training import ArchitectureSource
from bitsmith.zoo import space

SHAPE = (1, 16, 16)


def _small_ghn(**kw: object) -> GraphHyperNetwork:
    torch.manual_seed(0)
    return GraphHyperNetwork(GHNConfig(hidden=16, decoder_hidden=32, rank=8, **kw))


@pytest.mark.parametrize("name", ["lenet5", "resnet20", "mobilenetv2", "vgg_small"])
def test_encoding_covers_every_parameter_and_edges_go_forward(name: str) -> None:
    model = zoo.create_model(name, in_channels=1, image_size=16)
    enc = encode(model, SHAPE, cutoff=5)
    assert sorted(s.name for s in enc.slots) == sorted(n for n, _ in model.named_parameters())
    assert {s.shape for s in enc.slots} <= {tuple(p.shape) for p in model.parameters()}
    src, dst = enc.edges[:, 0], enc.edges[:, 1]
    assert bool((src < dst).all())
    assert int(enc.distance.min()) == 1 and int(enc.distance.max()) <= 5
    assert int((enc.distance > 1).sum()) > 0  # GHN-2 virtual edges
    assert enc.features.shape == (enc.num_nodes, len(FEATURES))
    assert int(enc.features[:, 0].max()) < len(KINDS)


def test_virtual_edges_are_weighted_shortest_paths() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 10))
    enc = encode(model, SHAPE, cutoff=50)
    pairs = {(int(s), int(d)): int(k) for (s, d), k in zip(enc.edges, enc.distance, strict=True)}
    n = enc.num_nodes
    assert pairs[(0, n - 1)] == n - 1  # a chain: input to output is n-1 hops
    assert len(pairs) == n * (n - 1) // 2


def test_unsupported_ops_are_named() -> None:
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.PReLU(), nn.Flatten(), nn.Linear(4 * 14 * 14, 10))
    with pytest.raises(UnsupportedLayerError, match="PReLU"):
        encode(model, SHAPE)

    class Odd(nn.Module):
        bitsmith_leaf = True

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x * 2

    with pytest.raises(UnsupportedLayerError, match="custom"):
        encode(nn.Sequential(nn.Conv2d(1, 4, 3), Odd()), SHAPE)


@pytest.mark.parametrize("encoder", ["gatedgnn", "graphormer"])
def test_prediction_fills_every_parameter_and_gradients_reach_the_ghn(encoder: str) -> None:
    ghn = _small_ghn(encoder=encoder)
    model = space.build_network(space.split("test", 1)[0], 10, 1, 16)
    before = {n: p.clone() for n, p in model.named_parameters()}
    predict(model, ghn)
    for name, p in model.named_parameters():
        assert torch.isfinite(p).all()
        if p.dim() > 1:  # 1-D heads start at zero: BN weight 1, biases 0, like a standard init
            assert not torch.equal(p, before[name]), name
    enc = encode(model, SHAPE, cutoff=ghn.config.cutoff)
    params = ghn([enc])[0]
    out = torch.func.functional_call(model, params, (torch.randn(4, *SHAPE),))
    out.square().mean().backward()
    grads = [p.grad for p in ghn.parameters() if p.grad is not None]
    assert len(grads) > len(list(ghn.parameters())) // 2
    assert all(torch.isfinite(g).all() for g in grads)


def test_predicted_weights_follow_fan_in_scaling() -> None:
    ghn = _small_ghn()
    model = zoo.create_model("resnet20", in_channels=1, image_size=16)
    predict(model, ghn)
    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            fan_in = module.weight[0].numel()
            rms = float(module.weight.detach().pow(2).mean().sqrt())
            assert 0.1 / math.sqrt(fan_in) < rms < 10 / math.sqrt(fan_in)
        if isinstance(module, nn.BatchNorm2d):
            assert bool((module.weight > 0).all() and (module.weight < 2).all())


def test_batched_prediction_equals_one_at_a_time() -> None:
    ghn = _small_ghn()
    specs = space.split("val", 3)
    one = [predict(space.build_network(s, 10, 1, 16), ghn) for s in specs]
    many = predict_many([space.build_network(s, 10, 1, 16) for s in specs], ghn)
    for a, b in zip(one, many, strict=True):
        for (name, pa), (_, pb) in zip(a.named_parameters(), b.named_parameters(), strict=True):
            assert torch.allclose(pa, pb, atol=1e-5), name


def _gated_gnn_node_by_node(gnn: GatedGNN, h: torch.Tensor, batch: Batch) -> torch.Tensor:
    """GHN-2's sweeps written plainly: one node at a time in topological order (then reversed), each node summing
    its neighbours' real-edge and (1/distance-weighted) virtual-edge messages before its GRU update."""
    edges = [(int(s), int(d), int(k)) for (s, d), k in zip(batch.edges, batch.distance, strict=True)]
    n = h.shape[0]

    def sweep(h: torch.Tensor, order: range, backward: bool) -> torch.Tensor:
        state = list(h)  # one tensor per node, replaced (not written in place) so that autograd can follow
        for v in order:
            incoming = [(d if backward else s, k) for s, d, k in edges if (s if backward else d) == v]
            if incoming:
                msg = sum(gnn.message[0 if k == 1 else 1](state[u]) / k for u, k in incoming)
                state[v] = gnn.gru(msg[None], state[v][None])[0]
        return torch.stack(state)

    for _ in range(gnn.layers):
        h = sweep(sweep(h, range(n), backward=False), range(n - 1, -1, -1), backward=True)
    return gnn.norm(h)


def test_level_batched_gated_gnn_equals_the_node_by_node_sweeps() -> None:
    torch.manual_seed(0)
    gnn = GatedGNN(16, layers=2)
    encodings = [encode(space.build_network(s, 10, 1, 16), SHAPE, cutoff=5) for s in space.split("val", 2)]
    batch = Batch.of(encodings)
    assert bool((batch.distance > 1).any())
    h = torch.randn(batch.features.shape[0], 16, requires_grad=True)
    fast, plain = gnn(h, batch), _gated_gnn_node_by_node(gnn, h, batch)
    assert torch.allclose(fast, plain, atol=1e-5)
    # the level-batched sweep rewrites its message buffer in place: its gradients must still be the plain ones
    probe = torch.randn_like(fast)
    inputs = [h, *gnn.parameters()]
    for a, b in zip(torch.autograd.grad((fast * probe).sum(), inputs),
                    torch.autograd.grad((plain * probe).sum(), inputs), strict=True):
        assert torch.allclose(a, b, atol=1e-5)


def _levels_as_sets(sweep: schedule.Sweep) -> list[tuple[set, set]]:
    """Per level: the nodes it updates and its edges as (target, source, virtual, weight), in node ids."""
    starts = torch.cumsum(torch.tensor([0, *sweep.sizes]), 0).tolist()
    out = [({int(v) for v in sweep.order[: sweep.sizes[0]]}, set())]
    for level, (row, slot, weight) in enumerate(sweep.edges, start=1):
        assert int((row // 2).max()) < starts[level] and int(slot.max()) < sweep.sizes[level]  # reads earlier levels
        nodes = sweep.order[starts[level]: starts[level + 1]]
        edges = {(int(nodes[t]), int(sweep.order[r // 2]), int(r % 2), float(w))
                 for r, t, w in zip(row, slot, weight[:, 0], strict=True)}
        out.append(({int(v) for v in nodes}, edges))
    assert torch.equal(sweep.order[sweep.position], torch.arange(len(sweep.order)))
    return out


def test_joined_schedule_is_the_schedule_of_the_joined_graph() -> None:
    encodings = [encode(space.build_network(s, 10, 1, 16), SHAPE, cutoff=5) for s in space.split("val", 3)]
    batch = Batch.of(encodings)
    whole = schedule.sweeps(batch.features.shape[0], batch.edges, batch.distance)
    for joined, direct in ((batch.sweeps.forward, whole.forward), (batch.sweeps.backward, whole.backward)):
        assert joined.sizes == direct.sizes and len(joined.edges) == len(direct.sizes) - 1
        assert _levels_as_sets(joined) == _levels_as_sets(direct)
    real = int((batch.distance == 1).sum())
    assert sum(len(e) for _, e in _levels_as_sets(whole.forward)) == len(batch.edges)
    assert sum(sum(1 for edge in e if edge[2] == 0) for _, e in _levels_as_sets(whole.backward)) == real


def test_ghn_file_round_trips_and_refuses_other_data(tmp_path) -> None:
    ghn = _small_ghn(encoder="graphormer")
    path = save_ghn(tmp_path / "g.safetensors", ghn, {"dataset": "digits"})
    back = load_ghn(path)
    assert back.info == {"dataset": "digits"} and back.config == ghn.config
    model = zoo.create_model("resnet20", in_channels=1, image_size=16)
    a = {n: p.clone() for n, p in predict(model, ghn).named_parameters()}
    for name, p in predict(model, back).named_parameters():
        assert torch.equal(p, a[name])
    with pytest.raises(BitsmithError, match="1x16x16 images and 10 classes"):
        predict(zoo.create_model("resnet20", in_channels=3, image_size=32), back)
    with pytest.raises(BitsmithError, match="10 classes"):
        predict(zoo.create_model("resnet20", num_classes=7, in_channels=1, image_size=16), back)
    (tmp_path / "bad.safetensors").write_bytes(b"not a file")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_ghn(tmp_path / "bad.safetensors")
    with pytest.raises(CheckpointError, match="shipped name"):
        load_ghn("no-such-ghn")


def test_recalibrate_bn_gives_the_exact_training_statistics() -> None:
    model = nn.Sequential(nn.Conv2d(1, 3, 3), nn.BatchNorm2d(3))
    x = torch.randn(40, 1, 8, 8) * 3 + 1
    recalibrate_bn(model, (x, torch.zeros(40, dtype=torch.long)), batches=4, batch_size=10)
    feats = model[0](x).detach()
    assert torch.allclose(model[1].running_mean, feats.mean(dim=(0, 2, 3)), atol=1e-5)
    assert model[1].momentum == 0.1 and not model[1].training or model[1].training


def test_trainer_averages_stacked_predictions() -> None:
    class Twin(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Linear(4, 3), nn.Linear(4, 3)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return torch.stack([self.a(x.flatten(1)), self.b(x.flatten(1))])

    x, y = torch.randn(20, 1, 2, 2), torch.randint(0, 3, (20,))
    twin = Twin()
    expected = (nn.functional.cross_entropy(twin.a(x.flatten(1)), y)
                + nn.functional.cross_entropy(twin.b(x.flatten(1)), y)) / 2
    assert evaluate_model(twin, (x, y))["loss"] == pytest.approx(float(expected.detach()), rel=1e-5)


def test_max_steps_and_nonfinite_rollback() -> None:
    class Flaky(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 3)
            self.calls = 0

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            self.calls += 1
            out = self.fc(x.flatten(1))
            return out * float("nan") if self.calls in (3, 4) else out

    data = torch.utils.data.TensorDataset(torch.randn(64, 1, 2, 2), torch.randint(0, 3, (64,)))
    data.num_classes = 3
    model = Flaky()
    trainer = Trainer(model, TrainConfig(epochs=5, batch_size=8, max_steps=10, on_nonfinite="restore",
                                         max_nonfinite=2), data, quiet=True)
    trainer.fit()
    assert trainer.global_step == 10  # optimizer steps; the 2 rolled-back batches are skipped, not counted
    assert model.calls == 12
    assert [r["type"] for r in trainer.history].count("restore") == 2
    assert all(torch.isfinite(p).all() for p in model.parameters())
    from bitsmith.engine import NonFiniteLossError

    model = Flaky()
    with pytest.raises(NonFiniteLossError, match="loss became nan"):
        Trainer(model, TrainConfig(epochs=1, batch_size=8, on_nonfinite="restore", max_nonfinite=1), data,
                quiet=True).fit()


def test_architecture_source_pools_and_draws_fresh() -> None:
    cfg = GHNConfig(hidden=16)
    pooled = ArchitectureSource(cfg, pool=3)
    assert pooled.draw_range == 3 and pooled.get(1) is pooled.get(1)
    fresh = ArchitectureSource(cfg, pool=0)
    assert fresh.draw_range > 10**6 and fresh.get(5) is not fresh.get(5)


@pytest.fixture(scope="module")
def trained_ghn(tmp_path_factory, train_ghn_briefly):
    """A GHN trained briefly on digits (two training architectures) through the Trainer."""
    return train_ghn_briefly(tmp_path_factory.mktemp("ghn") / "run", meta_batch=2, pool=2, eval_archs=2,
                             eval_every=2, bn_batches=4)


def test_training_learns_and_writes_a_loadable_file(trained_ghn) -> None:
    ghn, metrics, out = trained_ghn
    epochs = [json.loads(r) for r in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in epochs] == [1, 2, 3, 4]
    assert ["val_acc" in r for r in epochs] == [False, True, False, True]  # eval_every 2
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"] - 0.3  # the hypernetwork learns
    assert metrics["val_acc_worst"] <= metrics["val_acc"] <= 1.0
    seen = ArchitectureSource(ghn.config, pool=2).get(0).model  # a training architecture, on held-out images
    predict(seen, ghn)
    train_ds, test_ds = load_split(TrainConfig(), "train"), load_split(TrainConfig(), "test")
    recalibrate_bn(seen, train_ds, 4)
    print("seen-architecture test accuracy", evaluate_model(seen, test_ds)["acc"], epochs)
    assert evaluate_model(seen, test_ds)["acc"] > 0.4
    back = load_ghn(out)
    assert back.info["dataset"] == "digits" and back.info["epochs_trained"] == 4
    model = zoo.create_model("resnet20", in_channels=1, image_size=16)
    assert torch.equal(predict(model, back).conv1.weight, predict(model, ghn).conv1.weight)


@pytest.mark.parametrize("ghn_train", [
    GHNTrainConfig(meta_batch=1, pool=3, eval_archs=1, bn_batches=2),
    GHNTrainConfig(meta_batch=2, pool=3, eval_archs=1, bn_batches=2, quant="mixed", bits=[4, 2], per_layer=True),
], ids=["float", "ghnq-per-layer"])
def test_interrupted_ghn_training_resumes_exactly(tmp_path, ghn_train) -> None:
    from bitsmith.engine import Callback

    class Interrupt(Callback):
        def on_epoch_start(self, trainer, epoch):
            if epoch == 1:
                raise KeyboardInterrupt

    train = TrainConfig(model="cellnet", dataset="digits", image_size=8, val=True, epochs=2, batch_size=512,
                        optimizer="adamw", num_threads=1)
    args = ({"hidden": 16, "decoder_hidden": 32, "rank": 8}, ghn_train)
    whole, _ = train_ghn(train, *args, tmp_path / "whole", quiet=True)
    with pytest.raises(KeyboardInterrupt):
        train_ghn(train, *args, tmp_path / "cut", quiet=True, callbacks=[Interrupt()])
    resumed, _ = train_ghn(train, *args, tmp_path / "cut", quiet=True, resume=True)
    for (name, a), (_, b) in zip(whole.state_dict().items(), resumed.state_dict().items(), strict=True):
        assert torch.equal(a, b), name


def test_evaluation_rows_cache_and_compare(trained_ghn, tmp_path) -> None:
    ghn, _, _ = trained_ghn
    base = TrainConfig(dataset="digits")
    train_ds, test_ds = load_split(base, "train"), load_split(base, "test")
    cfg = EvalConfig(splits=["test"], n=1, steps=[1, 5], converge_epochs=1, bn_batches=2)
    compute_baselines(ghn.config, base, train_ds, test_ds, cfg, tmp_path / "base")
    cached = json.loads((tmp_path / "base" / "test-0.json").read_text())
    result = evaluate_ghn(ghn, base, train_ds, test_ds, cfg, tmp_path / "eval", baselines=tmp_path / "base")
    row = result["splits"]["test"]["rows"][0]
    assert row["converged"] == cached["converged"] and row["sgd_5"] == cached["sgd_5"]
    assert set(row) >= {"predicted", "pred_batchstat", "random", "sgd_1", "sgd_5", "finetune_5", "converged", "ratio"}
    assert row["converged"] > row["random"]
    again = evaluate_ghn(ghn, base, train_ds, test_ds, cfg, tmp_path / "eval", baselines=tmp_path / "base")
    assert again["splits"]["test"]["rows"][0] == row
    torch.manual_seed(1)
    other = GraphHyperNetwork(ghn.config)  # another GHN evaluated into the same folder: its own rows, not the cache's
    reused = evaluate_ghn(other, base, train_ds, test_ds, cfg, tmp_path / "eval", baselines=tmp_path / "base")
    fresh = evaluate_ghn(other, base, train_ds, test_ds, cfg, baselines=tmp_path / "base")
    assert reused["splits"]["test"]["rows"][0]["predicted"] == fresh["splits"]["test"]["rows"][0]["predicted"]
    assert fresh["splits"]["test"]["rows"][0]["predicted"] != row["predicted"]
    summary = result["splits"]["test"]["summary"]
    assert summary["n"] == 1 and summary["predicted"]["min"] == row["predicted"]
    with pytest.raises(BitsmithError, match="accepted: val, test, wide, deep, predefined"):
        EvalConfig(splits=["nope"])


def test_steps_worth_interpolates_on_a_log_scale() -> None:
    row = {"random": 0.1, "sgd_1": 0.2, "sgd_10": 0.5, "sgd_100": 0.9, "predicted": 0.7}
    assert steps_worth(row, [1, 10, 100]) == pytest.approx(10 ** 1.5)
    assert steps_worth({**row, "predicted": 0.05}, [1, 10, 100]) == 0.0
    assert steps_worth({**row, "predicted": 0.95}, [1, 10, 100]) is None


@pytest.mark.skipif("digits" not in shipped(), reason="no shipped digits GHN in this checkout")
def test_shipped_digits_ghn_predicts_accurate_parameters() -> None:
    ghn = load_ghn("digits")
    base = TrainConfig(dataset="digits")
    train_ds, test_ds = load_split(base, "train"), load_split(base, "test")
    accs = []
    for spec in space.split("test", 3):
        model = predict(space.build_network(spec, 10, 1, 16), ghn)
        recalibrate_bn(model, train_ds, 10)
        accs.append(evaluate_model(model, test_ds)["acc"])
    assert min(accs) > 0.8


@pytest.mark.skipif("fashion-mnist" not in shipped(), reason="no shipped Fashion-MNIST GHN in this checkout")
def test_shipped_fashion_mnist_ghn_serves_28x28_models_and_refuses_digits_ones() -> None:
    ghn = load_ghn("fashion-mnist")  # its accuracy needs the dataset (benchmarks/); here: shapes, finiteness, refusal
    assert ghn.config.input_shape == (1, 28, 28) and ghn.info["dataset"] == "fashion-mnist"
    for model in (space.build_network(space.split("test", 1)[0], 10, 1, 28), zoo.create_model("resnet20", 10, 1, 28)):
        before = [p.clone() for p in model.parameters()]
        predict(model, ghn)
        assert all(torch.isfinite(p).all() and not torch.equal(p, b)
                   for p, b in zip(model.parameters(), before, strict=True) if p.dim() > 1)
    with pytest.raises(BitsmithError, match="1x28x28 images"):
        predict(zoo.create_model("resnet20", 10, 1, 16), ghn)


def test_ranks_draw_different_architectures(monkeypatch) -> None:
    from bitsmith.engine import distributed as dist
    from bitsmith.methods.ghn import GHNTask

    task = GHNTask(_small_ghn(), ArchitectureSource(GHNConfig(hidden=16), pool=50), meta_batch=3, eval_archs=[])
    monkeypatch.setattr(dist, "world_size", lambda: 2)
    drawn = []
    for rank in (0, 1):
        monkeypatch.setattr(dist, "rank", lambda rank=rank: rank)
        torch.manual_seed(0)
        drawn.append([a.encoding for a in task.draw()])
    assert all(a is not b for a, b in zip(*drawn, strict=True))
