"""Deployment: ONNX export in QDQ form with an onnxruntime parity check, and bit-packed low-bit weights.

    from bitsmith.export import to_onnx, save_packed, load_packed
    to_onnx(qmodel, "model.onnx", (1, 16, 16), data=(x_test, y_test))   # raises ParityError on a mismatch
    save_packed(qmodel, "model.safetensors", config=run_config); same = load_packed("model.safetensors")

onnx and onnxruntime are optional (``pip install bitsmith[export]``) and imported on first use; the packed format
needs neither.
"""

from __future__ import annotations

from bitsmith.export._qparams import is_quantized
from bitsmith.export.onnx_export import DEFAULT_OPSET, OnnxExport, build_onnx, to_onnx
from bitsmith.export.packed import PackedSummary, load_packed, pack_bits, read_packed, save_packed, unpack_bits
from bitsmith.export.parity import ParityReport, check_parity, first_divergence, layer_errors

__all__ = [
    "DEFAULT_OPSET", "OnnxExport", "PackedSummary", "ParityReport", "build_onnx", "check_parity", "first_divergence",
    "is_quantized", "layer_errors", "load_packed", "pack_bits", "read_packed", "save_packed", "to_onnx", "unpack_bits",
]
