"""DirectQ (Hoang et al., IJCAI 2020): train low-bit CNNs by updating the quantized weights directly, with
learnable quantization levels, and an activation quantizer fitted to the majority of channels.

    qmodel = directq.prepare(model, directq.DirectQConfig(weight_bits=2, act_bits=2), example_input_shape)
    bitsmith.train(cfg, model=qmodel)            # or any training loop; nothing else to hook in
    core = directq.to_core(qmodel)               # plain core layers with the same outputs

Formulation: docs/METHODS.md.
"""

from __future__ import annotations

from bitsmith.methods.directq.config import IDEAS, DirectQConfig
from bitsmith.methods.directq.prepare import prepare, to_core
from bitsmith.methods.directq.quantizers import ChannelAwareActQuantizer, DirectWeightQuantizer

__all__ = ["IDEAS", "ChannelAwareActQuantizer", "DirectQConfig", "DirectWeightQuantizer", "prepare", "to_core"]
