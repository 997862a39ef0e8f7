"""The Deep Compression chain (Han et al. 2016): prune -> int8 keeping the zeros -> coded size.

Deployment side: it reads the int8 weights back out of a converted ``.tflite``.

1. Prune and retrain as usual (:func:`tfscalpel.prune`, ``UpdatePruningStep``), then
   :func:`tfscalpel.strip`.
2. Quantize with post-training int8 quantization through the exporter
   (:func:`tflite_export.converter.convert_keras`). TFLite quantizes weights *symmetrically* (zero point
   0, one scale per output channel), so ``round(0 / scale) = 0``: a pruned weight is exactly 0
   in int8 too. :func:`quantized_weights` reads the int8 weights back out of the flatbuffer and
   checks that every pruned weight stayed zero (it raises otherwise), so the claim is verified
   on the actual file, not assumed.
3. :func:`compression_report` prices the int8 sparse weights the way Deep Compression stores
   them: nonzero values plus *relative* indices (the gap to the previous nonzero, in 4 bits
   for fully connected and 8 bits for convolution layers, with a filler zero whenever a gap
   overflows), then Huffman-codes both streams. The Huffman size is computed exactly from the
   symbol counts (code lengths of an optimal prefix code, plus a canonical code table of two
   bytes per symbol that occurs); Shannon's entropy bound is reported beside it.

Han et al. quantize with k-means weight sharing at 5-8 bits; here the values are TFLite's
int8, so the row is "int8 + Huffman". Biases (int32) and per-channel scales (float32) are
counted uncoded in every format.
"""
import dataclasses
import heapq
import math

import keras
import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from tflite_export import flatbuffer
from tflite_export.converter import convert_keras
from tflite_export.fc_layers import builtin_code

#: Deep Compression's published LeNet results (Han et al. 2016, Table 1).
HAN_LENET = {
    "lenet_300_100": {"dense_kb": 1070, "compressed_kb": 27, "ratio": 40, "error": 1.58,
                      "dense_error": 1.64},
    "lenet5": {"dense_kb": 1720, "compressed_kb": 44, "ratio": 39, "error": 0.74,
               "dense_error": 0.80},
}

_FC_INDEX_BITS, _CONV_INDEX_BITS = 4, 8


@dataclasses.dataclass(frozen=True)
class QuantizedLayer:
    """One layer's int8 weights as TFLite stores them: ``q`` is ``[out, fan_in]`` (a conv
    filter ``[out, kh, kw, in]`` flattened), ``scales`` one per output channel."""

    name: str
    kind: str  # "fc" or "conv"
    q: np.ndarray
    scales: np.ndarray
    bias_count: int


def _float_kernels(model):
    """``[(layer, kernel in TFLite layout [out, fan_in])]`` for Dense/Conv2D layers."""
    found = []
    for layer in model._flatten_layers(include_self=False, recursive=True):
        kernel = getattr(layer, "kernel", None)
        if kernel is None or isinstance(layer, keras.Model):
            continue
        k = keras.ops.convert_to_numpy(kernel)
        if k.ndim == 2:
            found.append((layer, "fc", k.T))
        elif k.ndim == 4:  # (kh, kw, in, out) -> [out, kh, kw, in] -> [out, kh*kw*in]
            found.append((layer, "conv", np.transpose(k, (3, 0, 1, 2)).reshape(k.shape[3], -1)))
    return found


def quantized_weights(tflite_bytes, keras_model):
    """The int8 weights of every FULLY_CONNECTED and CONV_2D of an int8 ``.tflite``, named
    after the Keras layers of ``keras_model`` they came from (matched by shape, then by the
    dequantized values), as :class:`QuantizedLayer` in model order.

    Raises:
        ValueError: a layer has no int8 weights in the file (not an int8 model), cannot be
            matched, or a weight that is zero in ``keras_model`` is not zero in int8.
    """
    model = flatbuffer.load(tflite_bytes)
    ops = {schema.BuiltinOperator.FULLY_CONNECTED: "fc", schema.BuiltinOperator.CONV_2D: "conv"}
    candidates = []
    for sg in model.subgraphs:
        for op in sg.operators:
            kind = ops.get(builtin_code(model.operatorCodes[op.opcodeIndex]))
            if kind is None:
                continue
            tensor = sg.tensors[op.inputs[1]]
            if tensor.type != schema.TensorType.INT8:
                raise ValueError(f"{kind} weight {tensor.name!r} is not int8: quantize with "
                                 "tflite_export.convert_keras(model, 'int8', data)")
            q = flatbuffer.tensor_data(model, tensor, np.int8)
            if q is None:
                continue
            q = q.reshape(q.shape[0], -1)
            scales = np.asarray(tensor.quantization.scale, np.float32).reshape(-1)
            zero_points = np.asarray(tensor.quantization.zeroPoint).reshape(-1)
            if np.any(zero_points != 0):
                raise ValueError(f"weight {tensor.name!r} is asymmetric (zero point != 0)")
            bias = op.inputs[2] if len(op.inputs) > 2 else -1
            n_bias = int(np.prod(sg.tensors[bias].shape)) if bias >= 0 else 0
            candidates.append((kind, q, scales, n_bias))
    layers = []
    for layer, kind, w in _float_kernels(keras_model):
        best, best_err = None, np.inf
        for i, (ckind, q, scales, _) in enumerate(candidates):
            if ckind != kind or q.shape != w.shape:
                continue
            s = scales if scales.size == q.shape[0] else np.repeat(scales, q.shape[0])
            err = float(np.mean(np.abs(q * s[:, None] - w)))
            if err < best_err:
                best, best_err = i, err
        if best is None:
            raise ValueError(f"layer {layer.name!r} has no matching int8 weight in the .tflite")
        ckind, q, scales, n_bias = candidates.pop(best)
        resurrected = int(np.count_nonzero((w == 0) & (q != 0)))
        if resurrected:
            raise ValueError(f"layer {layer.name!r}: {resurrected} pruned weights are nonzero "
                             "after quantization")
        layers.append(QuantizedLayer(layer.name, kind, q, scales, n_bias))
    return layers


def relative_index_stream(flat, index_bits):
    """Deep Compression's sparse encoding of a flat weight array: ``(values, gaps)`` where
    ``gaps[i]`` is the distance from the previous stored entry (at most ``2**bits - 1``; a
    longer gap stores a filler zero value). ``values`` include the fillers."""
    nz = np.flatnonzero(flat)
    limit = (1 << index_bits) - 1
    values, gaps = [], []
    prev = -1
    for i in nz:
        gap = int(i - prev)
        while gap > limit:  # filler: a zero value one full gap further on
            values.append(0)
            gaps.append(limit)
            gap -= limit
        values.append(int(flat[i]))
        gaps.append(gap)
        prev = i
    return np.asarray(values, np.int64), np.asarray(gaps, np.int64)


def huffman_bits(symbols):
    """Exact payload size in bits of an optimal (Huffman) prefix code for ``symbols``."""
    _, counts = np.unique(np.asarray(symbols), return_counts=True)
    if counts.size <= 1:
        return int(counts.sum())  # one symbol still needs one bit per occurrence
    heap = [int(c) for c in counts]
    heapq.heapify(heap)
    total = 0
    # The sum of all merged weights equals sum(count * code length).
    while len(heap) > 1:
        a, b = heapq.heappop(heap), heapq.heappop(heap)
        total += a + b
        heapq.heappush(heap, a + b)
    return total


def entropy_bits(symbols):
    """Shannon bound: ``sum count * -log2(p)`` bits."""
    _, counts = np.unique(np.asarray(symbols), return_counts=True)
    p = counts / counts.sum()
    return float(-(counts * np.log2(p)).sum())


@dataclasses.dataclass(frozen=True)
class LayerCompression:
    """Storage of one layer in each format, in bytes, biases included (4 bytes each, float32
    or int32) and, for the int8 formats, the per-channel float32 scales."""

    name: str
    kind: str
    weights: int
    nonzero: int
    dense_fp32: int
    dense_int8: int
    sparse_int8: int  # int8 values + fixed-width relative indices (fillers included)
    huffman: int  # Huffman-coded values and indices + code tables
    entropy: int  # Shannon bound for the same two streams

    @property
    def density(self):
        return self.nonzero / self.weights


_SIZES = ("dense_fp32", "dense_int8", "sparse_int8", "huffman", "entropy")


@dataclasses.dataclass(frozen=True)
class CompressionReport:
    """Per-layer and total sizes; ``print()`` it for a table."""

    layers: tuple

    def total(self, field):
        """Sum of ``field`` over the layers."""
        return sum(getattr(r, field) for r in self.layers)

    @property
    def ratio(self):
        """Dense float32 size over Huffman-coded size (Deep Compression's headline number)."""
        return self.total("dense_fp32") / self.total("huffman")

    def to_dicts(self):
        return [dataclasses.asdict(r) for r in self.layers]

    def __str__(self):
        head = (f"{'layer':<8}{'weights':>9}{'kept':>7}{'fp32 B':>11}{'int8 B':>10}"
                f"{'sparse B':>10}{'Huffman B':>11}{'entropy B':>11}{'ratio':>8}")
        lines = [head, "-" * len(head)]
        rows = list(self.layers) + [None]
        for r in rows:
            if r is None:
                lines.append("-" * len(head))
                name, weights, kept = "total", self.total("weights"), self.total("nonzero")
                sizes = [self.total(f) for f in _SIZES]
            else:
                name, weights, kept = r.name, r.weights, r.nonzero
                sizes = [getattr(r, f) for f in _SIZES]
            lines.append(f"{name:<8}{weights:>9,}{kept / weights:>7.1%}"
                         + "".join(f"{v:>{w},}" for v, w in zip(sizes, (11, 10, 10, 11, 11)))
                         + f"{sizes[0] / sizes[3]:>7.1f}x")
        return "\n".join(lines)


def compression_report(layers):
    """Price :class:`QuantizedLayer` weights in every format (see the module docstring)."""
    rows = []
    for layer in layers:
        bits = _FC_INDEX_BITS if layer.kind == "fc" else _CONV_INDEX_BITS
        flat = layer.q.ravel()
        values, gaps = relative_index_stream(flat, bits)
        # Canonical code tables: each symbol that occurs, and its code length, one byte each.
        tables = 2 * (np.unique(values).size + np.unique(gaps).size)
        bias = 4 * layer.bias_count
        extra = bias + 4 * layer.scales.size  # int8 formats also store the scales
        rows.append(LayerCompression(
            name=layer.name, kind=layer.kind, weights=flat.size,
            nonzero=int(np.count_nonzero(flat)),
            dense_fp32=4 * flat.size + bias, dense_int8=flat.size + extra,
            sparse_int8=math.ceil(values.size * (8 + bits) / 8) + extra,
            huffman=math.ceil((huffman_bits(values) + huffman_bits(gaps)) / 8) + tables + extra,
            entropy=math.ceil((entropy_bits(values) + entropy_bits(gaps)) / 8) + extra,
        ))
    return CompressionReport(tuple(rows))


def deep_compression(stripped_model, representative_data):
    """Quantize a stripped, pruned model to int8 through the exporter and price it.

    Returns ``(tflite_bytes, CompressionReport)``; raises ValueError if quantization made any
    pruned weight nonzero (it cannot with TFLite's symmetric weights; the check proves it).
    """
    tflite_bytes = convert_keras(stripped_model, "int8", representative_data)
    return tflite_bytes, compression_report(quantized_weights(tflite_bytes, stripped_model))
