"""Keras 3 model -> `.tflite` bytes with TF's converter: float32, or full int8 from representative data.

`tf.lite.TFLiteConverter.from_keras_model` works for Keras 3 models on TF 2.21 (it exports a
SavedModel-style archive internally and prints its endpoints; that print is silenced here).
"""
from __future__ import annotations

import contextlib
import io
import re
import warnings
from typing import Callable, Iterable, Mapping, Sequence

import keras
import numpy as np
import tensorflow as tf

from tflite_export.quiet import converter_noise, filtered_stderr

QUANTIZE_CHOICES = (None, "int8")


def _model_inputs(model) -> list | None:
    """The model's symbolic inputs, or None for a subclassed model (Keras 3 gives it no
    ``.inputs``: its input signature is whatever it was first called with)."""
    try:
        return list(model.inputs)
    except (AttributeError, ValueError):
        return None


def _input_names(inputs) -> list[str]:
    return [getattr(t, "name", f"input_{i}").split(":")[0] for i, t in enumerate(inputs)]


def _calibration_dtype(array: np.ndarray, spec) -> np.dtype:
    """The dtype TF's converter expects for one representative array: the model input's own
    dtype when the model declares one, else float32 for floats and int32 for integers (token
    ids: Keras' Embedding takes int32 and TF traces an int array as int32)."""
    declared = getattr(spec, "dtype", None)
    if declared is not None:
        return np.dtype(str(declared))
    if np.issubdtype(array.dtype, np.integer) or array.dtype == np.bool_:
        return np.dtype(np.int32) if array.dtype != np.bool_ else np.dtype(np.bool_)
    return np.dtype(np.float32)


def _cast(array: np.ndarray, dtype: np.dtype, where: str) -> np.ndarray:
    array = np.asarray(array)
    if array.dtype == dtype:
        return array
    if np.issubdtype(dtype, np.integer) and not (np.issubdtype(array.dtype, np.integer) or
                                                 array.dtype == np.bool_):
        raise TypeError(f"representative_data for {where}: the model takes {dtype} (e.g. token "
                        f"ids), got {array.dtype} values; pass integer arrays")
    return array.astype(dtype)


def _as_input_list(model, data) -> list[np.ndarray]:
    """Representative arrays, one per model input, each with samples along axis 0, in the dtype
    each input takes (integer inputs such as token ids stay integers)."""
    inputs = _model_inputs(model)
    if isinstance(data, np.ndarray):
        arrays = [data]
    elif isinstance(data, Mapping):
        if inputs is None:
            arrays = [np.asarray(data[k]) for k in data]  # no names to match: insertion order
        else:
            names = _input_names(inputs)
            missing = [n for n in names if n not in data]
            if missing and len(data) == len(inputs):
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
    if inputs is not None and len(arrays) != len(inputs):
        raise ValueError(f"representative_data: {len(arrays)} arrays for a model with {len(inputs)} inputs")
    counts = {a.shape[0] if a.ndim else 0 for a in arrays}
    if len(counts) != 1 or 0 in counts:
        raise ValueError(f"representative_data: arrays need the same, nonzero number of samples; got {counts}")
    specs = inputs if inputs is not None else [None] * len(arrays)
    for i, (a, t) in enumerate(zip(arrays, specs)):
        want = None if t is None else tuple(t.shape[1:])
        if want is not None and not _shape_fits(a.shape[1:], want):
            raise ValueError(
                f"representative_data for input {i}: sample shape {tuple(a.shape[1:])}, model expects {want}"
            )
    return [_cast(a, _calibration_dtype(a, t), f"input {i}") for i, (a, t) in enumerate(zip(arrays, specs))]


def _shape_fits(shape, want) -> bool:
    return len(shape) == len(want) and all(w is None or int(w) == int(s) for s, w in zip(shape, want))


def _generator(model, data) -> Callable[[], Iterable[list]]:
    if callable(data) and not isinstance(data, np.ndarray):
        return _from_callable(model, data)
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


def _from_callable(model, fn) -> Callable[[], Iterable]:
    """TF's convention: ``fn()`` returns an iterable of steps, each a list of arrays (one per
    input) or a dict. A step that is a single array (one-input models) is wrapped in a list,
    and every array is cast to the dtype its input takes, as for arrays."""
    inputs = _model_inputs(model)

    def gen():
        steps = fn()
        try:
            iterator = iter(steps)
        except TypeError:
            raise TypeError("representative_data: a callable must return an iterable of steps "
                            f"(a generator function, as TF's converter takes); it returned "
                            f"{type(steps).__name__}") from None
        for step in iterator:
            if isinstance(step, Mapping):
                yield step
                continue
            step = [step] if not isinstance(step, (list, tuple)) else list(step)
            specs = inputs if inputs is not None and len(inputs) == len(step) else [None] * len(step)
            yield [_cast(a, _calibration_dtype(np.asarray(a), t), f"input {i}")
                   for i, (a, t) in enumerate(zip(step, specs))]

    return gen


def convert_keras(
    model,
    quantize: str | None = None,
    representative_data=None,
    int8_io: bool = False,
    per_channel: bool = True,
) -> bytes:
    """Convert a Keras 3 model to `.tflite` bytes.

    Args:
      model: a built Keras 3 model: Sequential, Functional, or subclassed (called once, so
        that its input signature is known; representative arrays are then taken as given,
        integer arrays as int32).
      quantize: None for float32, or "int8" for full integer quantization (weights and
        activations int8, int32 bias), which needs `representative_data`.
      representative_data: calibration inputs for int8: an array with samples on axis 0 (one
        input), a list of such arrays or a dict input name -> array (several inputs), or a
        callable returning an iterable of per-step input lists (TF's own convention; a step
        may also be a single array for a one-input model). Arrays are cast to the dtype each
        input takes: integer inputs (token ids) stay integers.

    Raises:
      ConversionError: TF's converter refused the model; the message names the TensorFlow ops
        and the fix (e.g. an LSTM or GRU that is not unrolled).
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
    if keras.backend.backend() != "tensorflow":
        raise RuntimeError(
            f"convert_keras: TFLite export needs Keras's TensorFlow backend; this process runs "
            f"KERAS_BACKEND={keras.backend.backend()!r}. Save the stripped model "
            "(model.save('stripped.keras')) and convert it in a TensorFlow-backend process, e.g. "
            "KERAS_BACKEND=tensorflow python -m tflite_export.convert --model stripped.keras "
            "--output model.tflite")
    model = as_float32(model)
    if _model_inputs(model) is None:
        model = _functional_view(model, representative_data)
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
    try:
        with contextlib.redirect_stdout(io.StringIO()), filtered_stderr(converter_noise):
            return bytes(converter.convert())
    except Exception as e:
        if type(e).__name__ != "ConverterError":
            raise
        raise ConversionError(explain_converter_error(model, str(e))) from e


def _functional_view(model, data):
    """A Functional model calling a subclassed ``model`` on ``keras.Input``s whose shapes and
    dtypes come from the representative data (integer arrays: int32 inputs), else from the
    shape the model was built with (float32). TF's converter would otherwise trace the model
    with ``model.input_dtype`` (float32) for every input, or refuse it."""
    if data is not None:
        sample = next(iter(_generator(model, data)()), None)
        if sample is None:
            raise ValueError("representative_data yielded no steps")
        if isinstance(sample, Mapping):
            sample = list(sample.values())
        specs = [(tuple(np.shape(a)[1:]), _calibration_dtype(np.asarray(a), None)) for a in sample]
    else:
        shapes = list((getattr(model, "_build_shapes_dict", None) or {}).values())
        if len(shapes) != 1 or not isinstance(shapes[0], (tuple, list)):
            raise ValueError(
                f"model {model.name!r} is subclassed (no .inputs) and its input shape is unknown: "
                "call it once on a batch of inputs (or model.build(input_shape)) before export")
        specs = [(tuple(shapes[0])[1:], np.dtype(np.float32))]
    inputs = [keras.Input(shape, dtype=str(dtype)) for shape, dtype in specs]
    outputs = model(inputs[0] if len(inputs) == 1 else inputs)
    return keras.Model(inputs, outputs, name=model.name)


class ConversionError(RuntimeError):
    """TF's converter refused the model; the message says which ops and what to do."""


# TensorFlow ops the converter emits for a Keras recurrent layer that is not unrolled (its
# while loop keeps per-step outputs in a TensorList); TFLite has no builtin for them.
_TENSOR_LIST_OPS = ("TensorListReserve", "TensorListSetItem", "TensorListGetItem",
                    "TensorListStack", "TensorListFromTensor", "TensorListLength")
_FAILED_OP = re.compile(r"'tf\.(\w+)' (?:op|that)|operation 'tf\.(\w+)'")


def explain_converter_error(model, message: str) -> str:
    """One line for a TF converter failure: the TensorFlow ops it could not lower, the Keras
    layers they come from where that is known, and what to do. The converter's own (MLIR)
    message is long and names neither."""
    ops = sorted({a or b for a, b in _FAILED_OP.findall(message)})
    first = next((ln.strip() for ln in message.splitlines() if "error:" in ln), message.strip())
    if not ops:
        return f"TF's converter failed: {first[:500]}"
    if any(op in _TENSOR_LIST_OPS for op in ops):
        rnn = [layer.name for layer in _all_layers(model)
               if isinstance(layer, keras.layers.RNN) and not getattr(layer, "unroll", False)]
        which = f"recurrent layer(s) {rnn}" if rnn else "a recurrent layer (LSTM/GRU/RNN)"
        return (f"TF's converter cannot lower {', '.join('tf.' + o for o in ops)}: {which} "
                f"converts to a TensorList loop, which TFLite builtins lack. Build the layer with "
                f"unroll=True (needs a fixed sequence length), or convert it yourself with select "
                f"TF ops (converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS, "
                f"tf.lite.OpsSet.SELECT_TF_OPS] and converter._experimental_lower_tensor_list_ops "
                f"= False), which needs the Flex delegate: tfscalpel's runtime and TFLite Micro "
                f"cannot run such a model.")
    return (f"TF's converter cannot lower {', '.join('tf.' + o for o in ops)} to TFLite builtins "
            f"(the op is not in TFLite's builtin set, or not for these shapes or dtypes); replace "
            f"the layer that uses it, or convert with select TF ops and the Flex delegate, which "
            f"tfscalpel's runtime and TFLite Micro cannot run. Converter: {first[:300]}")


def _all_layers(model) -> list:
    found, todo = [], list(getattr(model, "layers", []))
    while todo:
        layer = todo.pop(0)
        found.append(layer)
        todo.extend(getattr(layer, "layers", []) or [])
    return found
