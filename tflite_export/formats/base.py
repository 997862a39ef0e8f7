"""What every sparse format says about itself, and the plumbing the custom-op formats share.

A format is one object (a :class:`SparseFormat` subclass instance) in the registry
(``tflite_export/formats/__init__.py``). Everything about it is here or in its module:

- ``eligible(layer, target)``: why a FULLY_CONNECTED cannot take the format (None when it can):
  the layer's own limits (``FCLayer.unsupported``), the format's shape rule, its weights, and
  whether the target runs the format;
- ``widths`` / ``stored_units`` / ``label``: the candidates the cost model prices, by the
  profile entry named ``name``;
- ``rewrite``: encode the weights and rewrite the node in a ``ModelT``; returns the bytes the
  layer now stores (the size accounting of the report);
- for custom ops (:class:`CustomOpFormat`): op name, op version and format version, the
  parameter blob's sections, encode / decode in numpy, ``check_node`` (complete validation by the
  kernel's own validator, then the dense weights), the ctypes kernel binding, and the LiteRT /
  TFLite Micro registration data (``litert_kernel()``, ``tflm_registration``, the TFLite Micro
  arena numbers).
"""
from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tflite_export import params_blob, quantization

if TYPE_CHECKING:  # TensorFlow's schema is imported where a model is read or written, so that
    # the registry itself stays light (the runtime reads op names and kernels from it).
    from tensorflow.lite.python import schema_py_generated as schema

    from tflite_export.fc_layers import FCLayer

META_LEN = 16  # int32 entries of a custom op's meta section (FORMAT.md)


class SparseFormat:
    """One sparse format of a FULLY_CONNECTED layer (subclasses fill in the class attributes)."""

    name: str = ""  # the report's format label, formats= value and cost-profile entry
    title: str = ""  # for reasons: "<title> unusable: ..."
    op_name: str | None = None  # custom op name; None: a builtin operator with sparse weights
    op_version: int = 1  # operator code version written into the model
    format_version: int | None = None  # version of the layout in the node's constants

    def eligible(self, layer: FCLayer, target=None) -> str | None:
        """Why ``layer`` cannot take this format on ``target`` (None when it can).

        ``target``: a ``tfscalpel.HardwareTarget`` (or None: the layer alone is judged). A target
        runs the formats listed in its export data (``target.export_formats``)."""
        if layer.unsupported:
            return layer.unsupported
        runs = getattr(target, "export_formats", None)
        if runs is not None and self.name not in runs:
            return f"target {target.name} does not run {self.name} (it runs {sorted(runs)})"
        return self.layer_reason(layer)

    def layer_reason(self, layer: FCLayer) -> str | None:
        """The format's own rule on the layer's shape, dtype and weights."""
        return None

    def widths(self, layer: FCLayer, cost, pinned: int | None = None) -> tuple[int, ...]:
        """The group / block widths to price for ``layer``."""
        raise NotImplementedError

    def width_reason(self, layer: FCLayer, g: int) -> str | None:
        """Why ``layer`` cannot take the format at width ``g`` (None when it can)."""
        return None

    def stored_units(self, weights: np.ndarray, g: int) -> int:
        """Stored units (groups, blocks, windows) of ``weights[out, in]`` at width ``g``."""
        raise NotImplementedError

    def label(self, g: int) -> str:
        """How a candidate is named in reasons, e.g. ``custom g=4``."""
        return self.name

    def rewrite(self, model: schema.ModelT, layer: FCLayer, g: int) -> int:
        """Rewrite ``layer`` in ``model`` into this format; returns the bytes it now stores."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"<format {self.name} ({self.op_name or 'builtin'})>"


class CustomOpFormat(SparseFormat):
    """A custom operator whose node inputs are the activations and one parameter blob."""

    params_suffix: str = "tfs_params"  # the blob tensor is named "<layer>/<suffix>"
    tflm_registration: str | None = None  # C++ expression registering the TFLite Micro kernel
    #: TFLite Micro arena numbers of the adapter (c_array's estimate): persistent bytes per node.
    tflm_persistent_bytes: int = 0

    @property
    def sections(self) -> tuple[str, ...]:
        """The parameter blob's sections, FORMAT.md order (``params_blob.OP_SECTIONS``)."""
        return params_blob.OP_SECTIONS[self.op_name]

    # --- encode / decode ----------------------------------------------------------------------
    def arrays(self, model: schema.ModelT, layer: FCLayer, g: int) -> dict[str, np.ndarray]:
        """The node's constant arrays by section name (encode)."""
        raise NotImplementedError

    def decode(self, arrays: dict) -> np.ndarray:
        """The dense ``w[out, in]`` of a node's arrays (inverse of :meth:`arrays`' encoding)."""
        raise NotImplementedError

    def kernel(self, arrays: dict):
        """The ctypes binding of one validated layer (raises ``KernelFormatError``)."""
        raise NotImplementedError

    # --- LiteRT registration --------------------------------------------------------------------
    # The kernel library's function returning this op's adapter table (tfs_litert_common.h): the
    # runtime gives it to the one shared LiteRT kernel vtable as the op's context.
    litert_op_table: str = ""

    def tflm_workspace_bytes(self, x_type: int, batch: int, in_features: int) -> int:
        """Scratch bytes the TFLite Micro adapter requests for one node."""
        return 0

    # --- the shared plumbing ------------------------------------------------------------------
    def rewrite(self, model: schema.ModelT, layer: FCLayer, g: int) -> int:
        """Replace the FC by this op: inputs the activations and one constant uint8 blob
        holding every array (``params_blob``: LiteRT's per-run cost grows with the number of
        node inputs). Returns the blob's bytes."""
        from tensorflow.lite.python import schema_py_generated as schema

        from tflite_export import flatbuffer

        blob = self.blob(model, layer, g)
        sg = model.subgraphs[layer.subgraph]
        t = schema.TensorT()
        t.name = f"{layer.name}/{self.params_suffix}"
        t.shape = np.array(blob.shape, np.int32)
        t.type = schema.TensorType.UINT8
        t.buffer = flatbuffer.add_buffer(model, blob)
        sg.tensors.append(t)
        op = schema.OperatorT()
        op.opcodeIndex = flatbuffer.opcode_index(model, schema.BuiltinOperator.CUSTOM,
                                                 self.op_version, self.op_name)
        op.inputs = np.array([layer.input, len(sg.tensors) - 1], np.int32)
        op.outputs = np.array([layer.output], np.int32)
        op.builtinOptionsType = schema.BuiltinOptions.NONE
        op.customOptions = None  # every parameter is in the blob (FORMAT.md)
        sg.operators[layer.op_index] = op
        return int(blob.nbytes)

    def blob(self, model: schema.ModelT, layer: FCLayer, g: int) -> np.ndarray:
        """The node's parameter blob: ``[out, row_bytes]`` uint8 (FORMAT.md "Parameter blob")."""
        return params_blob.pack_params(self.arrays(model, layer, g), layer.out_features, self.sections)

    def tflm_node_workspace_bytes(self, model: schema.ModelT, sg, op) -> int:
        """Scratch bytes the TFLite Micro adapter requests for the node ``op`` of this format
        (``c_array.arena_estimate``): :meth:`tflm_workspace_bytes` of its activations."""
        x = sg.tensors[op.inputs[0]]
        shape = [] if x.shape is None else [max(int(d), 1) for d in x.shape]
        in_features = shape[-1] if shape else 1
        batch = int(np.prod(shape, dtype=np.int64)) // max(in_features, 1) if shape else 1
        return self.tflm_workspace_bytes(x.type, batch, in_features)

    def node_name(self, sg, op) -> str:
        """The layer name of a node this format wrote (its blob is "<layer>/<suffix>")."""
        from tflite_export import flatbuffer

        if op.inputs is None or len(op.inputs) < 2 or not 0 <= int(op.inputs[1]) < len(sg.tensors):
            return "<custom node>"
        name = flatbuffer.text(sg.tensors[int(op.inputs[1])].name) or ""
        suffix = "/" + self.params_suffix
        return name[: -len(suffix)] if name.endswith(suffix) else name

    def node_arrays(self, model: schema.ModelT, sg, op) -> tuple[str, dict]:
        """``(layer name, arrays)`` of one node of this op; raises ``KernelFormatError`` when
        the node does not have the layout (two inputs, a constant uint8 blob, sane sections)."""
        from tensorflow.lite.python import schema_py_generated as schema

        from tflite_export import flatbuffer
        from tflite_export.kernels import KernelFormatError

        name = self.node_name(sg, op)
        if len(op.inputs) != 2:
            raise KernelFormatError(f"{len(op.inputs)} inputs, expected 2 (activations, parameter blob)")
        t = sg.tensors[int(op.inputs[1])]
        blob = flatbuffer.tensor_data(model, t, np.uint8)
        if blob is None or t.type != schema.TensorType.UINT8:
            raise KernelFormatError("input 1 is not a constant uint8 parameter blob")
        if params_blob.is_chain(blob):
            raise KernelFormatError("a fused chain of layers (tflite_export.fusion, FORMAT.md "
                                    "\"Fused chains\"): check the model before it is fused")
        try:  # numpy slicing cannot read out of bounds; the kernel's validator checks the rest
            return name, params_blob.unpack_params(blob, self.sections)
        except (ValueError, KeyError, IndexError) as e:
            raise KernelFormatError(f"parameter blob: {e}") from None

    def check_node(self, model: schema.ModelT, sg, op) -> tuple[str, np.ndarray]:
        """``(layer name, dense w[out, in])`` of a node, after the kernel's validator accepted
        every field (raises ``KernelFormatError`` with its message otherwise)."""
        name, arrays = self.node_arrays(model, sg, op)
        self.kernel(arrays)
        return name, self.decode(arrays)


def meta_head(layer: FCLayer, *fields: int) -> np.ndarray:
    """A custom op's meta section: format version, in, out, then the format's fields."""
    meta = np.zeros(META_LEN, np.int32)
    meta[: 2 + len(fields)] = [fields[0], layer.in_features, layer.out_features, *fields[1:]]
    return meta


def bias_and_requant(model: schema.ModelT, layer: FCLayer, meta: np.ndarray) -> dict[str, np.ndarray]:
    """The bias, and for int8 the requantization arrays every custom op carries (FORMAT.md):
    fills ``meta[7:11]`` with the zero points and the activation range."""
    from tflite_export.fc_layers import bias_values

    arrays = {"bias": bias_values(model, layer)}
    if layer.dtype != "int8":
        return arrays
    sg = model.subgraphs[layer.subgraph]
    qx, qy = sg.tensors[layer.input].quantization, sg.tensors[layer.output].quantization
    qw = sg.tensors[layer.weight].quantization
    in_zp, out_zp = int(qx.zeroPoint[0]), int(qy.zeroPoint[0])
    meta[7:11] = [in_zp, out_zp,
                  *quantization.activation_range(layer.activation, float(qy.scale[0]), out_zp)]
    arrays["out_multiplier"], arrays["out_shift"] = quantization.per_channel_multipliers(
        float(qx.scale[0]), np.asarray(qw.scale), float(qy.scale[0]), layer.out_features)
    arrays["out_scale"] = quantization.per_channel_scales(
        qx.scale[0], np.asarray(qw.scale), qy.scale[0], layer.out_features).astype(np.float32)
    return arrays
