"""Keras 3 model -> `.tflite` bytes with TF's converter: float32, or full int8 from representative data.

`tf.lite.TFLiteConverter.from_keras_model` works for Keras 3 models on TF 2.21 (it exports a
SavedModel-style archive internally and prints its endpoints; that print is silenced here).
"""
from __future__ import annotations

import contextlib
import io
import warnings
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np
import tensorflow as tf

from tflite_export.quiet import converter_noise, filtered_stderr

QUANTIZE_CHOICES = (None, "int8")


def _input_names(model) -> list[str]:
    return [getattr(t, "name", f"input_{i}").split(":")[0] for i, t in enumerate(model.inputs)]


def _as_input_list(model, data) -> list[np.ndarray]:
    """Representative arrays, one per model input, each with samples along axis 0."""
    n_inputs = len(model.inputs)
    if isinstance(data, np.ndarray):
        arrays = [data]
    elif isinstance(data, Mapping):
        names = _input_names(model)
        missing = [n for n in names if n not in data]
        if missing and len(data) == n_inputs:
            arrays = [np.asarray(data[k]) for k in data]  # e.g. .npz arr_0, arr_1: file order
        elif missing:
            raise ValueError(f"representative_data: no array for model inputs {missing}; got {sorted(data)}")
        else:
            arrays = [np.asarray(data[n]) for n in names]
    elif isinstance(data, Sequence) and not isinstance(data, (str, bytes)):
        arrays = [np.asarray(a) for a in data]
    else:
        raise TypeError(
            "representative_data must be a numpy array, a list of arrays (one per input), a dict "
            f"input name -> array, or a callable yielding lists of arrays; got {type(data).__name__}"
        )
    if len(arrays) != n_inputs:
        raise ValueError(f"representative_data: {len(arrays)} arrays for a model with {n_inputs} inputs")
    counts = {a.shape[0] if a.ndim else 0 for a in arrays}
    if len(counts) != 1 or 0 in counts:
        raise ValueError(f"representative_data: arrays need the same, nonzero number of samples; got {counts}")
    for i, (a, t) in enumerate(zip(arrays, model.inputs)):
        want = tuple(t.shape[1:])
        if tuple(a.shape[1:]) != want:
            raise ValueError(
                f"representative_data for input {i}: sample shape {tuple(a.shape[1:])}, model expects {want}"
            )
    return [a.astype(np.float32) if a.dtype != np.float32 else a for a in arrays]


def _generator(model, data) -> Callable[[], Iterable[list]]:
    if callable(data) and not isinstance(data, np.ndarray):
        return data
    arrays = _as_input_list(model, data)

    def gen():
        for i in range(arrays[0].shape[0]):
            yield [a[i : i + 1] for a in arrays]  # one sample per step, batch 1

    return gen


def _is_mixed_policy(value) -> bool:
    """A serialised Keras dtype policy that computes in float16/bfloat16 (``mixed_float16``,
    ``mixed_bfloat16`` or a plain half-precision policy)."""
    if isinstance(value, dict) and value.get("class_name") == "DTypePolicy":
        value = value.get("config", {}).get("name")
    return isinstance(value, str) and value in ("mixed_float16", "mixed_bfloat16", "float16",
                                                "bfloat16")


def _float32_config(config):
    """``config`` (a model's, nested models included) with every half-precision dtype policy
    replaced by float32; returns (new config, number replaced)."""
    if isinstance(config, dict):
        if _is_mixed_policy(config) and config.get("class_name") == "DTypePolicy":
            return "float32", 1
        count, out = 0, {}
        for key, value in config.items():
            if key == "dtype" and _is_mixed_policy(value):
                out[key], n = "float32", 1
            else:
                out[key], n = _float32_config(value)
            count += n
        return out, count
    if isinstance(config, list):
        pairs = [_float32_config(v) for v in config]
        return [v for v, _ in pairs], sum(n for _, n in pairs)
    return config, 0


def as_float32(model):
    """``model`` itself when it computes in float32, else a float32 copy with the same weights.

    A model trained under ``keras.mixed_precision`` (``mixed_float16``/``mixed_bfloat16``)
    computes in half precision but stores float32 weights, so the copy loses nothing; TF's
    converter cannot build a float32 (or int8) TFLite model from the half-precision graph.
    The copy is announced with a warning. Sequential and Functional models only.
    """
    import keras
    from keras.src.models.functional import Functional

    config, replaced = _float32_config(model.get_config())
    if not replaced:
        return model
    if not isinstance(model, (keras.Sequential, Functional)):
        raise ValueError(
            f"model {model.name!r} computes in half precision (a mixed precision policy), and "
            f"only a Sequential or Functional model can be recast to float32 for export, not a "
            f"{type(model).__name__}; rebuild it under "
            "keras.mixed_precision.set_global_policy('float32') and copy the weights")
    copy = type(model).from_config(config)
    copy.set_weights(model.get_weights())
    warnings.warn(f"convert_keras: model {model.name!r} uses a mixed precision policy "
                  "(it computes in half precision); exporting it as float32 "
                  "(its weights are float32 already, nothing is lost)", stacklevel=3)
    return copy


def convert_keras(
    model,
    quantize: str | None = None,
    representative_data=None,
    int8_io: bool = False,
    per_channel: bool = True,
) -> bytes:
    """Convert a Keras 3 model to `.tflite` bytes.

    Args:
      model: a built Keras 3 model (Sequential or Functional).
      quantize: None for float32, or "int8" for full integer quantization (weights and
        activations int8, int32 bias), which needs `representative_data`.
      representative_data: calibration inputs for int8: an array with samples on axis 0 (one
        input), a list of such arrays or a dict input name -> array (several inputs), or a
        callable returning an iterable of per-step input lists (TF's own convention).
      int8_io: with int8, make the model's inputs and outputs int8 too (no QUANTIZE/DEQUANTIZE).
      per_channel: with int8, per-output-channel weight scales (TF's default) or one per tensor.

    A model trained under a mixed precision policy is converted as a float32 copy (see
    `as_float32`), with a warning saying so. Conversion runs on TensorFlow: under another Keras
    backend (JAX, PyTorch) it raises RuntimeError saying how to convert a saved `.keras` file.
    """
    if quantize not in QUANTIZE_CHOICES:
        raise ValueError(f"quantize={quantize!r}: allowed values are {QUANTIZE_CHOICES}")
    if quantize is None and int8_io:
        raise ValueError("int8_io=True needs quantize='int8'")
    if quantize == "int8" and representative_data is None:
        raise ValueError("quantize='int8' needs representative_data (calibration inputs)")
    import keras

    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"convert_keras: TFLite export needs Keras's TensorFlow backend; this process runs "
            f"KERAS_BACKEND={keras.backend.backend()!r}. Save the stripped model "
            "(model.save('stripped.keras')) and convert it in a TensorFlow-backend process, e.g. "
            "KERAS_BACKEND=tensorflow python -m tflite_export.convert --model stripped.keras "
            "--output model.tflite")
    model = as_float32(model)
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    if quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _generator(model, representative_data)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if int8_io:
            converter.inference_input_type = tf.int8
            converter.inference_output_type = tf.int8
        # Private but stable converter switch; TF has no public per-tensor option.
        converter._experimental_disable_per_channel = not per_channel
    # The export archive prints its endpoints on stdout; the converter logs on fd 2.
    with contextlib.redirect_stdout(io.StringIO()), filtered_stderr(converter_noise):
        return bytes(converter.convert())
