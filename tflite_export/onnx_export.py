"""ONNX export of a (2:4) Keras model through tf2onnx, for TensorRT's sparse tensor cores.

    from tflite_export.onnx_export import export_onnx
    export_onnx(stripped_model, "model_2_4.onnx")      # needs `pip install tf2onnx onnx`

The 2:4 weights are exported as they are (dense initializers with two zeros in every window of 4
along the input dimension); TensorRT detects the pattern itself when the engine is built with
sparse weights enabled (benchmarks/gpu/build_trt_engine.py). tf2onnx and onnx are optional and
imported only here. The model is traced as a ``tf.function`` with the Keras model's input
signature (tf2onnx's ``from_keras`` targets Keras 2), batch dimension left dynamic.
"""
from __future__ import annotations

import os


class OnnxExportError(RuntimeError):
    """tf2onnx / onnx missing, or the conversion failed; the message says which."""


def export_onnx(model, path: str, opset: int = 17) -> str:
    """Write ``model`` as ONNX to ``path`` (atomically); returns the path."""
    try:
        import tensorflow as tf
        import tf2onnx
    except ImportError as e:
        raise OnnxExportError(f"ONNX export needs tf2onnx and onnx (pip install tf2onnx onnx): {e}") from None
    from tflite_export.atomic import write_atomic

    specs = [tf.TensorSpec([None, *t.shape[1:]], tf.float32, name=f"input_{i}")
             for i, t in enumerate(model.inputs)]
    fn = tf.function(lambda *xs: model(list(xs) if len(xs) > 1 else xs[0], training=False))
    try:
        proto, _ = tf2onnx.convert.from_function(fn, input_signature=specs, opset=opset)
    except Exception as e:  # tf2onnx raises many kinds; report them as one
        raise OnnxExportError(f"tf2onnx failed to convert the model: {type(e).__name__}: {e}") from None
    write_atomic(os.fspath(path), proto.SerializeToString())
    return os.fspath(path)
