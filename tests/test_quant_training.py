"""QAT from scratch through the Trainer actually learns, at every bit width, for a seed that once stalled."""

from __future__ import annotations

import pytest

from bitsmith import data, zoo
from bitsmith.engine import TrainConfig, seeding, train
from bitsmith.quant import QConfig, quantize


@pytest.mark.parametrize("bits,floor", [(8, 0.9), (2, 0.4)])
def test_lsq_from_scratch_learns_on_digits(bits, floor):
    # seed 2 at W8A8 once collapsed to chance: raw step sizes moved by ~lr per Adam step and swamped activations
    ds = data.get("digits", split="train")
    seeding.seed_everything(2)
    model = zoo.create_model("lenet5", ds.num_classes, ds.in_channels, tuple(ds.image_size))
    qmodel = quantize(model, QConfig(weight_bits=bits, act_bits=bits, first_last_bits=None),
                      example_input_shape=(1, 16, 16))
    result = train(TrainConfig(seed=2, epochs=6, num_threads=1), model=qmodel, quiet=True)
    accs = [r["acc"] for r in result.history if r["type"] == "eval"]
    assert accs[-1] > floor and accs[-1] > accs[0] + 0.2, accs
