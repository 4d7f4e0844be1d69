"""GHN: a graph hypernetwork (GHN-2 style, optional Graphormer encoder) that reads a CNN's computational graph and
predicts all of its parameters in one forward pass::

    ghn = bitsmith.methods.ghn.load_ghn("digits")          # shipped, or a file / `ghn train` run folder
    model = bitsmith.create_model("resnet20", in_channels=1, image_size=16)
    bitsmith.methods.ghn.predict(model, ghn)                # fills every conv/linear/BN parameter in place
    bitsmith.engine.recalibrate_bn(model, train_data)       # the evaluation protocol: BN stats on training batches

GHN-Q (a hypernetwork trained with ``GHNTrainConfig(quant="mixed")`` reads bit widths)::

    qmodel = bitsmith.methods.ghn.predict_quantized(model, ghn, "W4A4", train_data)  # quantized, calibrated
"""

from bitsmith.methods.ghn.config import ENCODERS, GHNConfig, GHNTrainConfig
from bitsmith.methods.ghn.encoding import KINDS, Encoding, encode
from bitsmith.methods.ghn.evaluate import EVAL_SPLITS, EvalConfig, compute_baselines, evaluate_ghn, steps_worth
from bitsmith.methods.ghn.io import GHN_FILE, load_ghn, save_ghn, shipped
from bitsmith.methods.ghn.model import GraphHyperNetwork
from bitsmith.methods.ghn.predict import check_compatible, check_data, predict, predict_many
from bitsmith.methods.ghn.quantized import Widths, parse_widths, predict_quantized, quantize_target
from bitsmith.methods.ghn.training import GHNCallback, GHNTask, recipe, train_ghn

__all__ = [
    "ENCODERS", "EVAL_SPLITS", "GHN_FILE", "KINDS", "Encoding", "EvalConfig", "GHNCallback", "GHNConfig", "GHNTask",
    "GHNTrainConfig", "GraphHyperNetwork", "check_compatible", "check_data", "compute_baselines", "encode",
    "Widths", "evaluate_ghn", "load_ghn", "parse_widths", "predict", "predict_many", "predict_quantized",
    "quantize_target", "recipe", "save_ghn", "shipped", "steps_worth", "train_ghn",
]
