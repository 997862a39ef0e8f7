"""The exporter's public entry points: Keras model (or `.tflite` bytes) -> sparse-aware `.tflite` + report.

Flow: convert with TF's converter (`converter.py`), find every FULLY_CONNECTED (`fc_layers.py`),
name it after its Keras layer (`keras_names.py`), let the cost model choose dense / TFLite
block-sparse / TFS_GROUP_SPARSE_FC per layer (`planner.py`), rewrite the flatbuffer through the
schema's object API (`rewrite.py`), drop orphaned tensors and buffers and pack with every buffer
64-byte aligned (`flatbuffer.py`), and write the file atomically (`atomic.py`).
"""
from __future__ import annotations

import dataclasses
from typing import Mapping

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from tflite_export import cost_model, flatbuffer, keras_names, planner, rewrite
from tflite_export.atomic import write_atomic
from tflite_export.converter import convert_keras
from tflite_export.fc_layers import FCLayer, find_fully_connected
from tflite_export.report import ExportReport, LayerReport
from tflite_export.static_shapes import freeze_batch_reshapes


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """The exported model and its per-layer report."""

    model_bytes: bytes  # the rewritten .tflite
    report: ExportReport
    dense_model_bytes: bytes  # the converter's output before any rewrite (same weights, all dense)
    output: str | None  # where model_bytes was written, if anywhere

    def __str__(self) -> str:
        return self.report.table()

    def write_c_array(self, directory: str, stem: str = "model_data") -> tuple[str, str]:
        """Write the model as a 16-byte-aligned C array `<stem>.cc/.h` for TFLite Micro (see
        `tflite_export.c_array`, which also gives `arena_estimate` and `flash_table`)."""
        from tflite_export import c_array

        return c_array.write(self.model_bytes, directory, stem)


def export(
    model,
    target="x86-avx2",
    quantize: str | None = None,
    representative_data=None,
    output: str | None = None,
    group_sizes: Mapping[str, int] | None = None,
    formats: Mapping[str, str] | None = None,
    int8_io: bool = False,
    per_channel: bool = True,
) -> ExportResult:
    """Convert a stripped Keras 3 model to `.tflite`, group-sparse layers rewritten where faster.

    Args:
      model: a built Keras 3 model whose Dense kernels hold zeroed groups (e.g. `tfscalpel.strip`).
      target: a built-in target profile name (see `tflite_export.target_profiles.PROFILES`), a
        path to a JSON profile, a profile dict, or a `cost_model.CostModel`.
      quantize: None (float32) or "int8" (full integer; needs `representative_data`).
      representative_data: calibration inputs for int8 (see `converter.convert_keras`).
      output: if given, the `.tflite` is written there atomically (never a partial file).
      group_sizes: optional {layer name: g} pinning the custom op's group width per layer,
        g in (1, 2, 4, 8, 16); otherwise the cheapest g is chosen from the weights.
      formats: optional {layer name: "auto" | "dense" | "custom" | "builtin_sparse"} forcing a
        format per layer (default "auto": the cost model decides).
      int8_io: with int8, int8 model inputs/outputs instead of float32.
      per_channel: with int8, per-output-channel weight scales (default) or per-tensor.

    Layer names are the Keras layer names (matched by weights), else TFLite weight tensor names.
    """
    dense_bytes = convert_keras(model, quantize, representative_data, int8_io, per_channel)
    return rewrite_tflite(dense_bytes, target=target, output=output, group_sizes=group_sizes,
                          formats=formats, keras_model=model)


def rewrite_tflite(
    tflite_bytes: bytes,
    target="x86-avx2",
    output: str | None = None,
    group_sizes: Mapping[str, int] | None = None,
    formats: Mapping[str, str] | None = None,
    keras_model=None,
) -> ExportResult:
    """Rewrite an already converted `.tflite` (float32 or full int8): same choices as `export`.

    `keras_model`, when given, only supplies layer names for the report and the hints.
    """
    cost = cost_model.load(target)
    model = flatbuffer.load(tflite_bytes)
    fcs = find_fully_connected(model)
    if keras_model is not None:
        keras_names.assign_names(keras_model, model, fcs)
    group_sizes, formats = dict(group_sizes or {}), dict(formats or {})
    _check_hint_names(fcs, group_sizes, "group_sizes")
    _check_hint_names(fcs, formats, "formats")

    layer_reports = []
    for fc in fcs:
        decision = planner.decide(fc, cost, group_sizes.get(fc.name), formats.get(fc.name, "auto"))
        dense_b = _dense_bytes(model, fc)
        if decision.format == "custom":
            stored = rewrite.to_custom(model, fc, decision.g)
        elif decision.format == "builtin_sparse":
            stored = rewrite.to_builtin_sparse(model, fc, decision.g)
        else:
            stored = dense_b
        layer_reports.append(_layer_report(fc, decision, dense_b, stored))

    freeze_batch_reshapes(model)  # a custom op after Flatten needs an aligned (static) input
    flatbuffer.compact(model)
    out_bytes = flatbuffer.save(model)
    quant = _model_dtype(model)
    report = ExportReport(cost.name, quant, tuple(layer_reports), len(out_bytes), len(tflite_bytes))
    if output is not None:
        write_atomic(output, out_bytes)
    return ExportResult(out_bytes, report, bytes(tflite_bytes), output)


def _check_hint_names(fcs: list[FCLayer], hints: Mapping, arg: str) -> None:
    known = {fc.name for fc in fcs}
    unknown = sorted(set(hints) - known)
    if unknown:
        raise ValueError(f"{arg}: no FULLY_CONNECTED layer named {unknown}; layers are {sorted(known)}")


def _dense_bytes(model, fc: FCLayer) -> int:
    if fc.weights is None:
        return 0
    bias = 0 if fc.bias < 0 else 4 * fc.out_features  # float32 or int32
    return int(fc.weights.nbytes) + bias


def _model_dtype(model) -> str:
    # Full-int8 models carry int8 activations; float32 models (with or without FCs) carry none.
    int8 = any(t.type == schema.TensorType.INT8 for sg in model.subgraphs for t in sg.tensors)
    return "int8" if int8 else "float32"


def _layer_report(fc: FCLayer, d: planner.Decision, dense_b: int, stored: int) -> LayerReport:
    density = 1.0 if fc.weights is None else float(np.count_nonzero(fc.weights)) / max(fc.weights.size, 1)
    return LayerReport(
        layer=fc.name, shape=(fc.in_features, fc.out_features), dtype=fc.dtype,
        activation=fc.activation_name, format=d.format, g=d.g, density=round(density, 6),
        stored_units=d.units, bytes_dense=dense_b, bytes_exported=stored,
        expected_speedup=round(d.expected_speedup, 3), reason=d.reason,
    )
