"""Fusing consecutive custom-op layers into one node, for the host runtime (LiteRT).

LiteRT wraps every input and output of a custom-op node in a new tensor buffer on every run and
destroys it afterwards: ~0.55 us per node on the dev host, ~14x a small builtin node's cost
(RUNTIME.md "Overheads"; ``benchmarks/bench_node_overhead.py``).
A chain of nodes of one custom op where each node's output feeds only the next node becomes one
node whose parameter blob holds the layers' blobs in order (``params_blob.pack_chain``, FORMAT.md
"Fused chains"); the adapter runs the layers back to back with the intermediate activations in
its workspace, so the chain pays LiteRT's per-node cost once. The arithmetic is the layers' own,
so outputs are bit-exact with the unfused model.

Only the host runtime's LiteRT adapter reads fused chains (the TensorFlow Lite Micro adapter does
not: on a microcontroller a node costs no buffer wrapping); the exporter fuses for ``target="host"``.

    from tflite_export import fusion
    fused_bytes = fusion.fuse(tflite_bytes)
"""
from __future__ import annotations

import numpy as np

from tflite_export import flatbuffer, formats, params_blob


def _blob_tensor(model, sg, op):
    """The node's constant uint8 blob as an array, or None when the node is not the usual
    (activations, blob) -> output layout."""
    if op.inputs is None or len(op.inputs) != 2 or op.outputs is None or len(op.outputs) != 1:
        return None
    index = int(op.inputs[1])
    if not 0 <= index < len(sg.tensors):
        return None
    return flatbuffer.tensor_data(model, sg.tensors[index], np.uint8)


def _chains(model, sg) -> list[list[int]]:
    """Runs of operator indices to fuse: same custom op, each node's one output consumed only
    by the next node's activations input and not a subgraph output."""
    consumers: dict[int, list[int]] = {}
    for i, op in enumerate(sg.operators):
        for t in (op.inputs if op.inputs is not None else []):
            consumers.setdefault(int(t), []).append(i)
    outputs = {int(t) for t in (sg.outputs if sg.outputs is not None else [])}
    fusible = {}
    for i, op in enumerate(sg.operators):
        name = flatbuffer.custom_code(model, op)
        blob = _blob_tensor(model, sg, op) if name is not None else None
        # An already fused node stays as it is (fusing is done once, by the exporter).
        if formats.by_op_name(name) is not None and blob is not None and not params_blob.is_chain(blob):
            fusible[i] = name

    def successor(i: int) -> int | None:
        out = int(sg.operators[i].outputs[0])
        users = consumers.get(out, [])
        if out in outputs or len(users) != 1:
            return None
        j = users[0]
        nxt = sg.operators[j]
        if j <= i or fusible.get(j) != fusible[i] or int(nxt.inputs[0]) != out or int(nxt.inputs[1]) == out:
            return None
        return j

    starts = set(fusible)
    for i in fusible:
        j = successor(i)
        if j is not None:
            starts.discard(j)
    chains = []
    for i in sorted(starts):
        chain = [i]
        while (j := successor(chain[-1])) is not None:
            chain.append(j)
        for k in range(0, len(chain), params_blob.CHAIN_MAX_LAYERS):
            if len(chain[k:k + params_blob.CHAIN_MAX_LAYERS]) > 1:
                chains.append(chain[k:k + params_blob.CHAIN_MAX_LAYERS])
    return chains


def fuse_chains(model) -> list[str]:
    """Fuse every chain of consecutive custom-op nodes in ``model`` (a schema ``ModelT``, edited
    in place; run ``flatbuffer.compact`` afterwards to drop the orphaned tensors and buffers).
    Returns the fused nodes' names, e.g. ``["fc1+fc2+fc3"]``."""
    from tensorflow.lite.python import schema_py_generated as schema

    fused = []
    for sg in model.subgraphs:
        drop = set()
        for chain in _chains(model, sg):
            fmt = formats.by_op_name(flatbuffer.custom_code(model, sg.operators[chain[0]]))
            blobs, names = [], []
            for i in chain:
                op = sg.operators[i]
                blobs.append(_blob_tensor(model, sg, op))
                names.append(fmt.node_name(sg, op))
            last = sg.operators[chain[-1]]
            out_features = int(sg.tensors[int(last.inputs[1])].shape[0])  # the blob's first dim
            blob = params_blob.pack_chain(blobs, out_features)
            t = schema.TensorT()
            name = "+".join(names)
            t.name = f"{name}/{fmt.params_suffix}"
            t.shape = np.array(blob.shape, np.int32)
            t.type = schema.TensorType.UINT8
            t.buffer = flatbuffer.add_buffer(model, blob)
            sg.tensors.append(t)
            first = sg.operators[chain[0]]
            first.inputs = np.array([int(first.inputs[0]), len(sg.tensors) - 1], np.int32)
            first.outputs = np.array([int(last.outputs[0])], np.int32)
            drop.update(chain[1:])
            fused.append(name)
        sg.operators = [op for i, op in enumerate(sg.operators) if i not in drop]
    return fused


def fused_nodes(model) -> list[str]:
    """Names of the fused nodes in ``model`` (a schema ``ModelT``): what only the host runtime
    runs."""
    names = []
    for sg in model.subgraphs:
        for op in sg.operators or []:
            fmt = formats.by_op_name(flatbuffer.custom_code(model, op))
            blob = _blob_tensor(model, sg, op) if fmt is not None else None
            if blob is not None and params_blob.is_chain(blob):
                names.append(fmt.node_name(sg, op))
    return names


def fuse(tflite_bytes: bytes) -> bytes:
    """``tflite_bytes`` with every chain of consecutive custom-op layers fused (see the module
    docstring); a model without such chains comes back re-packed but unchanged."""
    model = flatbuffer.load(tflite_bytes)
    fuse_chains(model)
    flatbuffer.compact(model)
    return flatbuffer.save(model)
