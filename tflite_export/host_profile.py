"""A cost profile measured on this host for one model's layers: what a host latency budget
prices.

    from tflite_export import host_profile
    profile = host_profile.measure(dense_model)                  # seconds to a minute
    the_plan = tfscalpel.plan(dense_model, "x86-avx2", budget=tfscalpel.Budget(latency=0.3),
                              profile=profile, sensitivity_data=(x_val, y_val))
    ...  # prune with the plan, fine-tune, strip
    export(stripped, target="host")                              # measured again, per layer

A registered CPU profile (``x86-avx2``, ``x86-avx512``) is a line fitted on another machine, or
on this one over other shapes, while ``export(target="host")`` times every candidate here
(``tflite_export.host``): a budget priced with the line is missed where the two disagree
(LeNet-300-100 float32 at 0.3x dense: 0.344x measured with ``x86-avx2``). This module times
what the allocator will ask about, through the same host runtime: the dense model, and for each
FULLY_CONNECTED layer the whole model with that layer alone rewritten into the group-sparse
custom op (each CONV_2D into TFS_GROUP_SPARSE_CONV2D, as ``export(target="host")`` measures it)
at each candidate width ``g`` and several group sparsities (the layer's own weights, the
lowest-L2 groups removed, as ``tfscalpel``'s magnitude pruning removes them). A layer's sparse
cost is what it changes in the whole model (its own kernel, the custom node's overhead, the
XNNPACK partition it splits), so the per-layer sum is the whole model's time; each layer is
also timed alone, dense, for the exporter's rule. All candidates are timed in interleaved rounds
(best of ``rounds``; the dense model next to each): the machine may be shared, and the figures
are compared with each other.

The result is the base profile plus a ``"measured"`` table per dtype::

    "measured": {"float32": {"model_ns": -5200.0,    # whole dense model - its layers' dense_ns
                             "layers": {"784x300": {"dense_ns": 21000.0,   # the layer alone
                                                    "custom": {"8": [[stored_groups, ns], ...]}},
                                        "conv:500x50@64": {...}}}}}   # K x filters @ positions

where a custom entry is the slower of two measurements, as ``export(target="host")`` counts a
candidate: ``dense_ns`` plus the whole model's change (the median over the rounds of its time
minus the dense model's timed just before it), and the layer alone in the custom op
(:func:`shape_key` names the entries). ``model_ns`` holds what is not a FULLY_CONNECTED or CONV_2D (pooling, reshapes)
and the interpreter's per-run cost, less the per-run cost each layer paid alone.
``tfscalpel.layer_costs`` prices a layer of that shape from the table (linearly in stored
groups between the measured points, the nearest segment beyond them) and falls back to the
base profile's line elsewhere; the allocator adds ``model_ns`` to every total, so relative
budgets are relative to the whole model as measured. ``min_speedup`` becomes the host
exporter's margin: the allocator keeps dense what ``export(target="host")`` would keep dense
(a conv whose measured points never beat dense by it, e.g. a K = 25 first conv, is priced
dense at every sparsity). Consecutive custom layers are fused by
the exporter (one node), which the per-layer sum does not credit: the export is then a little
faster than planned. The training side never imports this module: the user (or
``benchmarks/bench_budget.py``) passes the dict as ``profile=``.
"""
from __future__ import annotations

import copy

import numpy as np

from tflite_export import cost_model, flatbuffer, formats
from tflite_export.fc_layers import find_fully_connected

from tfscalpel.checks import is_integer

#: Group sparsities timed per layer and g (the allocator interpolates between them and extends
#: the lowest segment below: there the custom op is rarely faster than dense on a CPU).
DEFAULT_SPARSITIES = (0.3, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)


def group_pruned(weights: np.ndarray, g: int, sparsity: float) -> np.ndarray:
    """``weights`` ``[out, in]`` with the groups of ``g`` consecutive inputs that
    ``tfscalpel.GroupPattern(g)`` removes at ``sparsity`` by L2 norm (the lowest first, ragged
    tails counted as groups): the layer's stored-group count after pruning."""
    from tfscalpel.importance import get_importance
    from tfscalpel.patterns import GroupPattern

    pattern = GroupPattern(g)
    kernel = np.asarray(weights, np.float64).T  # Keras layout (in, out)
    keep = pattern.keep_blocks(pattern.scores(kernel, get_importance("l2")), sparsity=sparsity)
    mask = pattern.expand(keep, kernel.shape[0]).T.astype(bool)
    return np.where(mask, weights, np.zeros_like(weights))


def nondecreasing(values):
    """``values`` (times at increasing stored groups) each lowered to the least time at any
    larger count: a layer storing more groups does not run faster, and timing noise on a
    shared machine only ever adds time, so a larger count's lower time proves the smaller
    count's time was disturbed."""
    out, low = [], float("inf")
    for v in reversed(values):
        low = min(low, float(v))
        out.append(low)
    return out[::-1]


def shape_key(kind: str, layer) -> str:
    """The ``"measured"`` table's key of a layer: ``"<in>x<out>"`` for a FULLY_CONNECTED,
    ``"conv:<kh*kw*cin>x<cout>@<output positions>"`` for a CONV_2D (what
    ``tfscalpel.layer_costs`` looks a layer up by)."""
    if kind == "conv":
        return f"conv:{layer.in_features}x{layer.out_features}@{layer.positions}"
    return f"{layer.in_features}x{layer.out_features}"


def _with_weights(model_bytes: bytes, fc, weights: np.ndarray) -> bytes:
    """``model_bytes`` with ``fc``'s constant weight tensor replaced by ``weights``."""
    model = flatbuffer.load(model_bytes)
    tensor = model.subgraphs[fc.subgraph].tensors[fc.weight]
    data = np.ascontiguousarray(weights.astype(fc.weights.dtype)).tobytes()
    model.buffers[tensor.buffer].data = np.frombuffer(data, np.uint8)
    return flatbuffer.save(model)


def _timer(model_bytes: bytes, x: np.ndarray) -> float:
    from tflite_export.host import runtime_timer

    return runtime_timer(model_bytes, x, rounds=2, iterations=100)


def measure(model, target="x86-avx2", dtype="float32", sparsities=DEFAULT_SPARSITIES,
            group_sizes=None, rounds: int = 5, timer=None, margin: float | None = None,
            representative_data=None) -> dict:
    """The base ``target``'s profile plus this host's measured times for ``model``'s layers
    (module docstring).

    Args:
        model: the dense Keras model the budget will be planned on.
        target: the registered target (or a profile) the plan uses; its profile is the base.
        dtype: "float32", or "int8" (full integer; needs ``representative_data``).
        sparsities: group sparsities timed per layer and width, each in (0, 1).
        group_sizes: widths timed (default: the target's SIMD width for ``dtype``, what
            ``tfscalpel.plan`` gives each layer).
        rounds: interleaved timing rounds; each candidate keeps its best.
        timer: ``timer(model_bytes, x) -> seconds`` (default: the host runtime, one thread;
            tests inject a synthetic one).
        margin: the profile's ``min_speedup`` (default ``tflite_export.host.MARGIN``, the host
            exporter's).
        representative_data: int8 calibration inputs.

    Returns a profile dict for ``tfscalpel.plan(..., profile=)`` / ``tfscalpel.prune``.
    """
    from tfscalpel import targets

    from tflite_export import host
    from tflite_export.converter import convert_keras

    base = copy.deepcopy(cost_model.load(target).profile)
    if dtype not in base.get("dtypes", cost_model.DTYPES):
        raise ValueError(f"profile {base.get('name')!r} does not price dtype {dtype!r}")
    if group_sizes is None:
        if not isinstance(target, (str, targets.HardwareTarget)):
            raise ValueError("group_sizes= is needed when target is a profile, not a target")
        group_sizes = (targets.get_target(target).group_size(dtype),)
    sparsities = tuple(sorted(float(s) for s in sparsities))
    if not sparsities or any(not 0 < s < 1 for s in sparsities):
        raise ValueError(f"sparsities must lie in (0, 1), got {sparsities}")
    if not is_integer(rounds) or rounds < 1:
        raise ValueError(f"rounds must be an integer >= 1, got {rounds!r}")
    timer = timer or _timer
    margin = host.MARGIN if margin is None else float(margin)
    dense_bytes = convert_keras(model, "int8" if dtype == "int8" else None, representative_data)
    from tflite_export import conv_layers

    # Every model to time: (key, model bytes); key None is the whole dense model.
    candidates, layers = [(None, dense_bytes, host.model_input(dense_bytes))], {}
    # FULLY_CONNECTED layers into the FC custom op, CONV_2D layers into the conv op (the one
    # export(target="host") measures them in: host.HostMeasurement.decide_conv), each the same way
    for kind, find, fmt in (("fc", find_fully_connected, formats.get("custom")),
                            ("conv", conv_layers.find_conv2d, formats.get("custom_conv"))):
        for index, layer in enumerate(find(flatbuffer.load(dense_bytes))):
            key = (kind, index)
            alone = flatbuffer.save(host.layer_model(dense_bytes, layer))
            candidates.append(((key, "alone"), alone, host.model_input(alone)))
            layers[key] = (shape_key(kind, layer), {})  # every layer has its dense time
            if layer.unsupported or layer.weights is None or fmt.eligible(layer):
                continue
            for g in group_sizes:
                if fmt.width_reason(layer, g):
                    continue
                for s in sparsities:
                    pruned = group_pruned(layer.weights, g, s)
                    stored = fmt.stored_units(pruned, g)
                    if stored and stored not in layers[key][1].setdefault(g, set()):
                        layers[key][1][g].add(stored)
                        pruned_bytes = _with_weights(dense_bytes, layer, pruned)
                        candidates.append(((key, g, stored), host.with_layer_rewritten(
                            pruned_bytes, find, index, fmt, g), candidates[0][2]))
                        # and alone, as export(target="host") times it: the slower counts
                        one = flatbuffer.save(host.layer_model(pruned_bytes, layer))
                        candidates.append(((key, g, stored, "alone"), host.with_layer_rewritten(
                            one, find, 0, fmt, g), host.model_input(one)))
    # interleaved, the whole dense model next to every other candidate (host.interleaved_best)
    # each change from the dense model timed just before it, the median over the rounds
    # (host.interleaved_best: robust to a busy spell and to one lucky timing); a candidate's
    # time is the slower of that and the layer alone, as the host exporter counts it
    paired = {}
    best = host.interleaved_best(timer, candidates, rounds, paired)
    whole = best[None]
    entries, layer_sum = {}, 0.0
    for key, (shape, points) in layers.items():
        dense_ns = best[(key, "alone")]
        layer_sum += dense_ns
        if shape in entries:
            continue  # a repeated shape: priced by its first layer
        entries[shape] = {"dense_ns": dense_ns, "custom": {
            str(g): [[n, t] for n, t in zip(sorted(ns), nondecreasing(
                [max(dense_ns + float(np.median(paired[(key, g, n)])), best[(key, g, n, "alone")])
                 for n in sorted(ns)]))]
            for g, ns in points.items()}}
    base.update(name=f"{base.get('name', 'profile')}-measured",
                source=f"{base.get('source', '')}; the model's layers measured on this host "
                "(tflite_export.host_profile)", min_speedup=margin)
    base.setdefault("measured", {})[dtype] = {"model_ns": whole - layer_sum, "layers": entries}
    return base


def main(argv=None) -> int:
    """``python -m tflite_export.host_profile --model dense.keras --output host.json``: the
    profile for ``tfscalpel.plan(..., profile="host.json")``."""
    import argparse
    import json

    p = argparse.ArgumentParser(description="Measure a budget profile for a model's layers on "
                                "this host (tflite_export.host_profile).")
    p.add_argument("--model", required=True, help="the dense .keras model the budget is planned on")
    p.add_argument("--output", required=True, help="the JSON profile to write")
    p.add_argument("--target", default="x86-avx2", help="the target the plan uses (its profile "
                   "is the base)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds")
    args = p.parse_args(argv)
    import keras

    from tflite_export.atomic import write_atomic

    profile = measure(keras.models.load_model(args.model), args.target, rounds=args.rounds)
    write_atomic(args.output, json.dumps(profile, indent=1))
    print(json.dumps(profile["measured"], indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())


def measure_flash(model, target="cortex-m4", dtype="int8", representative_data=None,
                  profile=None) -> dict:
    """``profile`` (default the target's) plus the flash no layer owns, measured from the dense
    export: ``measured[dtype]["model_bytes"]`` is the ``.tflite`` file ``export`` writes for
    ``model`` with every layer dense, minus each priced layer's predicted bytes
    (``tfscalpel.layer_costs``: weights, bias, quantization parameters, 64-byte alignment).
    It holds the flatbuffer's tables, tensor names and the graph's other constants; the
    allocator adds it once to every flash total (as ``model_ns`` for latency), so a flash
    budget is a budget on the file and the dense total is the dense file exactly. A custom op
    layer has one tensor where dense has two, so a pruned file comes out a little (a few
    hundred bytes per sparse layer) under its prediction.

    Args:
        model: the dense Keras model the budget will be planned on.
        target: the registered target the plan uses.
        dtype: "int8" (needs ``representative_data``) or "float32".
        profile: a profile dict to extend (e.g. from :func:`measure`); not modified.

    Returns a profile dict for ``tfscalpel.plan(..., profile=)``.
    """
    import tfscalpel
    from tfscalpel.layer_costs import LayerShape, ProfileCosts

    base = copy.deepcopy(profile if profile is not None else cost_model.load(target).profile)
    result = dense_export(model, target, dtype, representative_data)
    costs = ProfileCosts(tfscalpel.get_target(target), base, dtype)
    layers = sum(costs.dense(LayerShape.of(model.get_layer(p.name), p.layer_type,
                                           p.fan_in)).flash
                 for p in tfscalpel.plan(model, target).layers)
    base.setdefault("measured", {}).setdefault(dtype, {})["model_bytes"] = (
        float(len(result.model_bytes)) - layers)
    return base


def dense_export(model, target="cortex-m4", dtype="int8", representative_data=None):
    """``export(model, target)`` with every layer kept dense (the file a flash budget is
    relative to; a dense model's convolutions may otherwise be exported sparse where the
    custom op is faster on their ragged groups)."""
    from tflite_export.exporter import export, rewrite_tflite

    result = export(model, target=target, quantize="int8" if dtype == "int8" else None,
                    representative_data=representative_data)
    if any(r.format != "dense" for r in result.layers):
        result = rewrite_tflite(result.dense_model_bytes, target=target, keras_model=model,
                                formats={r.layer: "dense" for r in result.layers})
    return result
