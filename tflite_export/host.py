"""Host measurement: ``export(..., target="host")`` times every candidate on this machine.

For each FULLY_CONNECTED layer, with its real shape, weights and dtype, the candidates are
dense (the converter's builtin, run by XNNPACK), and every registered format the layer is
eligible for at each width it offers (``tflite_export.formats``): each is a one-layer model cut
out of the converted model, rewritten into the format and run through the host runtime
(LiteRT with the custom ops registered), so the per-node cost of a custom op is in the time.
The fastest wins only when it beats dense by ``margin`` (never slower than dense on the machine
that exported it); otherwise the layer stays dense. The report gives the measured speedup.

Layers are decided in order. When a layer reads only the output of the previous layer, and that
layer became a custom op, the export fuses the two into one node (``tflite_export.fusion``), so a
custom candidate of the same op would not pay LiteRT's per-node cost again: every candidate of
such a layer is then timed as a two-layer model behind the previous layer as chosen (fused where
both are of one op), minus the previous layer's own time.

Each FULLY_CONNECTED candidate is measured twice, interleaved with dense in the same ``ROUNDS``
rounds (``interleaved_best``), and the slower measurement counts, as for a conv below: alone (or
marginal, behind a fused prefix) against dense alone, and in the whole model as decided so far
(earlier layers' choices applied and fused) with only this layer rewritten, as dense's time plus
the model's change. A busy spell on a shared machine flatters one of them, rarely both. A time
under dense / ``MAX_CREDIBLE`` (a marginal lost in the prefix's noise, or <= 0) is no
measurement: the other one counts alone, and with neither the candidate cannot win. The margin
applies to the counted time.

The contract is the whole model's: ``confirm`` times the exported model against the dense one in
interleaved rounds, and the exporter (``exporter.rewrite_tflite``) reverts the sparse layer with
the least measured speedup to dense while the exported model is slower than dense (threshold
1.00x: per-layer margins do not add up across fusion, XNNPACK's partition and noise); the
reverted layer's reason and the report's note say so. The confirmation is cached like the rest.

CONV_2D layers (``decide_conv``) are measured in the whole model, since a convolution's cost
depends on the XNNPACK partition around it: the whole dense model and the whole model with only
that conv rewritten into each conv format at each width it offers are timed in interleaved
rounds (each candidate keeps its best; the dense model is timed next to each), and the conv
alone, dense and in each candidate, as one-op models. A candidate's time is the slower of two
measurements, the conv's dense time plus the whole model's change and the candidate alone, and
the margin applies to that, as for a FULLY_CONNECTED: a conv is rewritten only when both the
whole model and the conv alone measured faster with it.

Times are cached in ``~/.cache/tfscalpel/host/`` (``$TFSCALPEL_CACHE/host/`` when set, or
``cache_dir``), one JSON file per machine fingerprint (CPU model, ISA features, kernel-library
build, LiteRT version: ``host_info.fingerprint``), keyed per candidate by the layer's weights,
dtype, format and width: a second export of the same model measures nothing, and a new CPU,
kernel build or LiteRT measures anew.
The timer is injectable (``timer(model_bytes, x) -> seconds``), which is how the tests drive
the selection with synthetic timings.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re

import numpy as np
from tensorflow.lite.python import schema_py_generated as schema

from tflite_export import flatbuffer, formats, fusion, host_info
from tflite_export.atomic import write_atomic
from tflite_export.cost_model import Estimate
from tflite_export.fc_layers import FCLayer, find_fully_connected
from tflite_export.formats.block_sparse import TFLITE_BLOCKS
from tflite_export.planner import FORMAT_CHOICES, Decision

#: A sparse candidate must run at least this much faster than dense (timing noise).
MARGIN = 1.10
#: Interleaved rounds of the timings of a layer's candidates (``decide``, ``decide_conv``) and of
#: the whole-model confirmation (``confirm``).
ROUNDS = 3
CONV_ROUNDS = ROUNDS
#: A candidate time under dense / MAX_CREDIBLE is no measurement (a marginal time lost in a fused
#: prefix's noise, or <= 0): the best speedup measured in the project is ~19x (float32 g=8 at
#: 90 %, issue 14), and the physical limit at 10 % density is about 10x.
MAX_CREDIBLE = 50.0


def model_input(model_bytes: bytes) -> np.ndarray:
    """Zeros of the model's first input's shape (unknown dimensions count 1) and type."""
    sg = flatbuffer.load(model_bytes).subgraphs[0]
    tensor = sg.tensors[int(sg.inputs[0])]
    shape = tuple(max(int(d), 1) for d in tensor.shape)
    return np.zeros(shape, np.int8 if tensor.type == schema.TensorType.INT8 else np.float32)


def interleaved_best(timer, candidates: list, rounds: int, paired: dict | None = None) -> dict:
    """``{key: best nanoseconds}`` of ``candidates`` (``(key, model_bytes, x)``, the first the
    reference) over ``rounds`` interleaved rounds, the reference timed next to every other
    candidate: drift in a shared machine's load hits every candidate, and the reference's error
    would shift every comparison with it.

    ``paired``: a dict filled with ``{key: [nanoseconds of key minus the reference timed just
    before it, one per round]}``: a candidate's change from the reference, measured fairly.
    The overall best of the reference is a minimum over every candidate's rounds, far more
    samples than any one candidate's, so on a loaded machine it sits below what each candidate
    could reach and every change from it comes out too slow; a difference of two minima over
    a few rounds each is thrown off by one lucky timing (take the median of the pairs)."""
    best = {}
    for _ in range(rounds):
        for key, model_bytes, x in candidates:
            before = None
            for k, b, xk in ([candidates[0]] if key != candidates[0][0] else []) + [(key, model_bytes, x)]:
                t = 1e9 * float(timer(b, xk))
                best[k] = min(best.get(k, float("inf")), t)
                if paired is not None and before is not None:
                    paired.setdefault(key, []).append(t - before)
                before = t
    return best


def with_layer_rewritten(model_bytes: bytes, find, index: int, fmt, g: int) -> bytes:
    """The whole model with the ``index``-th layer of ``find(model)`` (``find_fully_connected``
    or ``conv_layers.find_conv2d``) rewritten into ``fmt`` at ``g``."""
    return with_layers_rewritten(model_bytes, find, [(index, fmt, g)])


def with_layers_rewritten(model_bytes: bytes, find, rewrites, fuse: bool = False) -> bytes:
    """The whole model with each ``(index, fmt, g)`` of ``rewrites`` applied to the
    ``index``-th layer of ``find(model)``; ``fuse``: chains of custom nodes fused, as the host
    export does (``fusion.fuse_chains``)."""
    model = flatbuffer.load(model_bytes)
    layers = find(model)  # rewrites keep operator indices: find once
    for index, fmt, g in rewrites:
        fmt.rewrite(model, layers[index], g)
    if fuse:
        fusion.fuse_chains(model)
    flatbuffer.compact(model)
    return flatbuffer.save(model)


def runtime_timer(model_bytes: bytes, x: np.ndarray, rounds: int = 5, iterations: int = 200) -> float:
    """Seconds per batch-1 run of ``model_bytes`` on this machine: best of ``rounds`` C-timed
    loops of the host runtime, one thread."""
    from tflite_export import runtime

    with runtime.load(model_bytes, num_threads=1) as rt:
        rt.run(x)
        return min(rt.time_run(iterations) for _ in range(rounds))


def layer_model(model_bytes: bytes, fc: FCLayer, prefix: FCLayer | None = None) -> schema.ModelT:
    """A model holding only ``fc``'s FULLY_CONNECTED (behind ``prefix``'s, which feeds it, when
    given): the first layer's input and ``fc``'s output become the model's (and its
    signature's), everything else is dropped."""
    model = flatbuffer.load(model_bytes)
    model.subgraphs = [model.subgraphs[fc.subgraph]]
    sg = model.subgraphs[0]
    first = prefix or fc
    sg.operators = [sg.operators[i] for i in ([prefix.op_index] if prefix else []) + [fc.op_index]]
    sg.inputs, sg.outputs = np.array([first.input], np.int32), np.array([fc.output], np.int32)
    sig = schema.SignatureDefT()
    sig.signatureKey, sig.subgraphIndex = b"serving_default", 0
    sig.inputs, sig.outputs = [schema.TensorMapT()], [schema.TensorMapT()]
    sig.inputs[0].name, sig.inputs[0].tensorIndex = b"x", first.input
    sig.outputs[0].name, sig.outputs[0].tensorIndex = b"y", fc.output
    model.signatureDefs = [sig]
    flatbuffer.compact(model)
    return model


def _digest(model_bytes: bytes) -> str:
    return hashlib.sha256(model_bytes).hexdigest()


def _only_reader(model_bytes: bytes, prev: FCLayer, fc: FCLayer) -> bool:
    """Whether ``fc`` is the one reader of ``prev``'s output, which is no model output (so the
    exporter's fusion may join them)."""
    if prev.subgraph != fc.subgraph or prev.output != fc.input:
        return False
    sg = flatbuffer.load(model_bytes).subgraphs[fc.subgraph]
    readers = sum(int(t) == prev.output for op in sg.operators for t in (op.inputs if op.inputs is not None else []))
    return readers == 1 and prev.output not in {int(t) for t in sg.outputs}


@dataclasses.dataclass
class HostMeasurement:
    """Measures candidates on this host (see the module docstring); use it as ``target=``.

    Args:
        timer: ``timer(model_bytes, x) -> seconds``; default :func:`runtime_timer`.
        cache_dir: where the cache lives (default ``$TFSCALPEL_CACHE`` or ``~/.cache/tfscalpel``).
        margin: how much faster than dense a sparse candidate must measure.
        key: the cache's machine key (default: ``host_info.fingerprint()``).
    """

    timer: object = None
    cache_dir: str | None = None
    margin: float = MARGIN
    key: str | None = None
    name: str = "host"

    def __post_init__(self):
        self.timer = self.timer or runtime_timer
        self._chosen = {}  # (model digest, subgraph, output tensor) -> (FCLayer, format, g) chosen
        self.key = self.key or host_info.fingerprint()
        from tfscalpel.datasets import cache_dir  # the project's one cache ($TFSCALPEL_CACHE)

        base = self.cache_dir or str(cache_dir())
        slug = re.sub(r"[^A-Za-z0-9]+", "-", self.key).strip("-")[:80]
        digest = hashlib.sha256(self.key.encode()).hexdigest()[:12]
        self.path = os.path.join(base, "host", f"{slug}-{digest}.json")
        self.times = {}
        try:
            with open(self.path, encoding="utf-8") as f:
                stored = json.load(f)
            if stored.get("key") == self.key:
                self.times = dict(stored.get("times", {}))
        except (OSError, ValueError, AttributeError):
            pass  # no cache yet, or an unreadable one: measure again (save() rewrites it)
        self.measured = 0  # timer calls made by this object (cache misses)

    def _time(self, model_bytes: bytes, x) -> float:
        self.measured += 1
        return self.timer(model_bytes, x)

    def save(self) -> None:
        """Write the cache (atomically)."""
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        write_atomic(self.path, json.dumps({"key": self.key, "times": self.times}, indent=1,
                                           sort_keys=True))

    def _candidate(self, model_bytes: bytes, fc: FCLayer, fmt, g: int, prefix=None):
        """``(cache key, model bytes, input)`` of ``fc`` in ``fmt`` at width ``g`` (``fmt`` None:
        dense), behind ``prefix`` = ``(layer, format, g)`` when given (see ``time_candidate``)."""
        model = layer_model(model_bytes, fc, prefix[0] if prefix else None)
        first = prefix[0] if prefix else fc
        sg = model.subgraphs[0]
        shape = tuple(max(int(d), 1) for d in sg.tensors[int(sg.inputs[0])].shape) \
            or (1, first.in_features)
        rows = "" if len(shape) == 2 and shape[0] == 1 else f":rows{int(np.prod(shape[:-1]))}"
        key = self._key(fc, fmt, g) + rows
        if prefix is not None:
            key = f"{self._key(*prefix)} then {key}"
        layers = find_fully_connected(model)
        for layer, f, width in zip(layers, ([prefix[1]] if prefix else []) + [fmt],
                                   ([prefix[2]] if prefix else []) + [g]):
            if f is not None:
                f.rewrite(model, layer, width)
        fusion.fuse_chains(model)
        flatbuffer.compact(model)
        x = np.zeros((1, *shape[1:]), np.int8 if fc.dtype == "int8" else np.float32)
        return key, flatbuffer.save(model), x

    def time_candidate(self, model_bytes: bytes, fc: FCLayer, fmt, g: int, prefix=None) -> float:
        """Measured seconds of ``fc`` in ``fmt`` at width ``g`` (``fmt`` None: dense); with
        ``prefix`` = ``(layer, format, g)`` the seconds of that layer followed by ``fc``, fused
        where both are custom nodes of one op (the exporter fuses them). The model runs on its
        own input shape at batch 1 (a Transformer's ``[1, seq, in]``: seq rows, which the SpMM
        kernels run); dimensions unknown until run time count 1."""
        key, model, x = self._candidate(model_bytes, fc, fmt, g, prefix)
        if key not in self.times:
            self.times[key] = float(self._time(model, x))
        return self.times[key]

    @staticmethod
    def _key(fc: FCLayer, fmt, g: int) -> str:
        weights = hashlib.sha256(np.ascontiguousarray(fc.weights).tobytes()).hexdigest()[:16]
        return f"{fc.dtype}:{fc.in_features}x{fc.out_features}:{fc.activation}:{weights}:" \
               f"{'dense' if fmt is None else fmt.name}:{g}"

    def _fused_prefix(self, model_bytes: bytes, fc: FCLayer):
        """``(layer, format, g)`` of the custom-op layer decided before ``fc`` that the exporter
        will fuse with a custom ``fc`` of the same op, or None."""
        prev = self._chosen.get((_digest(model_bytes), fc.subgraph, fc.input))
        if prev is None or getattr(prev[1], "op_name", None) is None:
            return None
        return prev if _only_reader(model_bytes, prev[0], fc) else None

    def decide(self, model_bytes: bytes, fc: FCLayer, group_size: int | None = None,
               force: str = "auto") -> Decision:
        """Measure ``fc``'s candidates and choose (see the module docstring)."""
        formats.check_request(fc, force, FORMAT_CHOICES, group_size)
        units = fc.in_features * fc.out_features
        # A re-export (``confirm``'s reverts) decides again: no stale fused prefix.
        self._chosen.pop((_digest(model_bytes), fc.subgraph, fc.output), None)
        if fc.unsupported or force == "dense":
            why = f"kept dense: {fc.unsupported}" if fc.unsupported else "kept dense: forced by formats="
            dense = Estimate("dense", 0, units, 0.0)
            return Decision("dense", 0, units, dense, dense, why)
        prefix = self._fused_prefix(model_bytes, fc)
        options, notes = formats.candidates(fc, formats.all_formats(), force, self, group_size)
        if not options:
            dense = Estimate("dense", 0, units, 1e9 * self.time_candidate(model_bytes, fc, None, 0))
            if force != "auto":
                raise ValueError(f"layer {fc.name!r}: cannot force {force}: "
                                 + ("; ".join(notes) or "all weights are zero"))
            return Decision("dense", 0, units, dense, dense,
                            "kept dense: " + ("; ".join(notes) or "all weights are zero"))
        times = self._measure_fc(model_bytes, fc, prefix, options)
        behind = "" if prefix is None else f"; alone: each behind {prefix[0].name} as {prefix[1].label(prefix[2])}"
        measured = [(fmt, g, n, alone, change)
                    for (fmt, g, n), (alone, change) in zip(options, times["candidates"])]
        decision = self._verdict(measured, times["dense"], units, force, "layer", behind)
        if decision.format != "dense":
            self._chosen[(_digest(model_bytes), fc.subgraph, fc.output)] = (
                fc, formats.get(decision.format), decision.g)
        return decision

    def _measure_fc(self, model_bytes: bytes, fc: FCLayer, prefix, options) -> dict:
        """Interleaved timings (``ROUNDS``, cached) of ``fc``: ``{"dense": ns alone,
        "candidates": [(ns alone, ns of the whole model's change), ...]}`` per ``options``
        (``(format, g, units)``); alone behind ``prefix`` means the time added to the prefix's.
        The whole model's change is from the model as decided so far (earlier layers' sparse
        choices applied and fused, as the export will) to it with ``fc`` rewritten too."""
        digest = _digest(model_bytes)
        fcs = find_fully_connected(flatbuffer.load(model_bytes))
        index = {(c.subgraph, c.op_index): i for i, c in enumerate(fcs)}
        i = index[(fc.subgraph, fc.op_index)]
        # Layers are decided in order: those before fc (a re-export decides them all again).
        so_far = sorted((index[(layer.subgraph, layer.op_index)], f, g, self._key(layer, f, g))
                        for (d, _, _), (layer, f, g) in self._chosen.items()
                        if d == digest and index[(layer.subgraph, layer.op_index)] < i)
        whole = f"whole:{digest[:16]}"
        if so_far:
            whole += " with " + hashlib.sha256(" ".join(k for *_, k in so_far).encode()).hexdigest()[:16]
        alone = [self._candidate(model_bytes, fc, f, g, prefix) for f, g in
                 [(None, 0)] + [(f, g) for f, g, _ in options]]
        base = [self._candidate(model_bytes, *prefix)] if prefix is not None else []
        tag = ":interleaved"  # not the one-off timings time_candidate caches under the bare key
        keys = [whole] + [k + tag for k, _, _ in base + alone] \
            + [f"{self._key(fc, f, g)} in {whole}" for f, g, _ in options]
        if any(k not in self.times for k in keys):
            find, done = find_fully_connected, [r[:3] for r in so_far]
            reference = with_layers_rewritten(model_bytes, find, done, fuse=True) if done else model_bytes
            candidates = [(whole, reference, model_input(model_bytes))]
            candidates += [(k + tag, b, x) for k, b, x in base + alone]
            candidates += [(k, with_layers_rewritten(model_bytes, find, done + [(i, f, g)], fuse=True),
                            candidates[0][2]) for k, (f, g, _) in zip(keys[1 + len(base + alone):], options)]
            for k, ns in interleaved_best(self._time, candidates, ROUNDS).items():
                self.times[k] = ns / 1e9
        ns = {k: 1e9 * self.times[k] for k in keys}
        offset = ns[keys[1]] if base else 0.0
        alone_ns = [ns[k + tag] - offset for k, _, _ in alone]
        changes = [ns[k] - ns[whole] for k in keys[1 + len(base + alone):]]
        return {"dense": alone_ns[0], "candidates": list(zip(alone_ns[1:], changes))}

    def decide_conv(self, model_bytes: bytes, conv, group_size: int | None = None,
                    force: str = "auto") -> Decision:
        """Measure a CONV_2D's candidates in the whole model and choose (module docstring);
        ``conv`` is a ``conv_layers.ConvLayer`` of ``model_bytes``."""
        from tflite_export import conv_layers

        fmts = formats.conv_formats()
        choices = ("auto", "dense") + tuple(f.name for f in fmts)
        formats.check_request(conv, force, choices, group_size, " (a conv layer)")
        units = conv.in_features * conv.out_features
        if conv.unsupported or force == "dense":
            why = f"kept dense: {conv.unsupported}" if conv.unsupported else "kept dense: forced by formats="
            dense = Estimate("dense", 0, units, 0.0)
            return Decision("dense", 0, units, dense, dense, why)
        options, notes = formats.candidates(conv, fmts, force, self, group_size)
        if not options:
            if force != "auto":
                raise ValueError(f"layer {conv.name!r}: cannot force {force}: "
                                 + ("; ".join(notes) or "all weights are zero"))
            dense = Estimate("dense", 0, units, 0.0)
            return Decision("dense", 0, units, dense, dense,
                            "kept dense: " + ("; ".join(notes) or "all weights are zero"))
        index = next(i for i, c in enumerate(conv_layers.find_conv2d(flatbuffer.load(model_bytes)))
                     if (c.subgraph, c.op_index) == (conv.subgraph, conv.op_index))
        whole = f"whole:{_digest(model_bytes)[:16]}"
        geom = f":conv{conv.in_h}x{conv.in_w}k{conv.kh}x{conv.kw}s{conv.stride_h}x{conv.stride_w}" \
               f"d{conv.dil_h}x{conv.dil_w}p{conv.padding}"
        alone_key = self._key(conv, None, 0) + geom + ":alone"
        n = len(options)
        keys = [whole, alone_key] + [f"{self._key(conv, f, g)}{geom} in {whole}" for f, g, _ in options] \
            + [f"{self._key(conv, f, g)}{geom}:alone" for f, g, _ in options]
        if any(k not in self.times for k in keys):
            alone = flatbuffer.save(layer_model(model_bytes, conv))
            find = conv_layers.find_conv2d
            candidates = [(whole, model_bytes, model_input(model_bytes)),
                          (alone_key, alone, model_input(alone))]
            candidates += [(k, with_layer_rewritten(model_bytes, find, index, f, g), candidates[0][2])
                           for k, (f, g, _) in zip(keys[2:2 + n], options)]
            candidates += [(k, with_layer_rewritten(alone, find, 0, f, g), candidates[1][2])
                           for k, (f, g, _) in zip(keys[2 + n:], options)]
            for k, ns in interleaved_best(self._time, candidates, ROUNDS).items():
                self.times[k] = ns / 1e9
        measured = [(fmt, g, stored, 1e9 * self.times[k_alone],
                     1e9 * (self.times[k_in] - self.times[whole]))
                    for (fmt, g, stored), k_in, k_alone in zip(options, keys[2:2 + n], keys[2 + n:])]
        return self._verdict(measured, 1e9 * self.times[alone_key], units, force, "conv", "")

    def _verdict(self, measured: list, dense_ns: float, units: int, force: str, what: str,
                 behind: str) -> Decision:
        """The choice among ``measured`` = ``[(format, g, units, alone ns, whole-model change
        ns), ...]`` against the dense layer's ``dense_ns``, FC and conv alike.

        Each candidate has two measurements, interleaved with dense in the same rounds, and the
        slower counts: alone (an FC behind a fused prefix: what it adds to the prefix) against
        dense alone, and in the whole model (dense time plus the whole model's change: the XNNPACK
        partition around the layer included). A busy spell on a shared machine can flatter one of
        them, rarely both. A time under dense / MAX_CREDIBLE (a marginal lost in a prefix's noise,
        or <= 0) measures nothing: the other measurement counts alone; with neither credible the
        candidate cannot win. Sparse needs ``self.margin`` over dense unless forced."""
        dense = Estimate("dense", 0, units, dense_ns)
        credible = dense_ns / MAX_CREDIBLE
        ranked = []
        for fmt, g, n, alone, change in measured:
            usable = [t for t in (alone, dense_ns + change) if t > credible]
            if usable:
                ranked.append((fmt, g, n, max(usable), alone, change))
        if not ranked:
            fmt, g, n, alone, change = min(measured, key=lambda m: m[3] + m[4])
            text = (f"{fmt.label(g)} not measurable vs dense {dense_ns / 1e3:.2f} us (alone "
                    f"{alone / 1e3:.2f} us, the dense {what} plus the whole model's change "
                    f"{change / 1e3:+.2f} us: both under dense / {MAX_CREDIBLE:g}; on {self.key}{behind})")
            if force == "auto":
                return Decision("dense", 0, units, dense, dense, f"kept dense: best sparse choice {text}")
            return Decision(fmt.name, g, n, dense, Estimate(fmt.name, g, n, dense_ns),
                            text + " (forced by formats=)")
        fmt, g, n, t, alone, change = min(ranked, key=lambda m: m[3])
        speedup = dense_ns / t
        text = (f"{fmt.label(g)} measured {speedup:.2f}x vs dense ({t / 1e3:.2f} us vs "
                f"{dense_ns / 1e3:.2f} us, the slower of: alone {alone / 1e3:.2f} us, the dense {what} "
                f"plus the whole model's change {change / 1e3:+.2f} us; on {self.key}{behind})")
        if force == "auto" and speedup < self.margin:
            return Decision("dense", 0, units, dense, dense, f"kept dense: best sparse choice "
                            f"{text}, < {self.margin:.2f}x required")
        return Decision(fmt.name, g, n, dense, Estimate(fmt.name, g, n, t),
                        text + (" (forced by formats=)" if force != "auto" else ""))

    def confirm(self, dense_bytes: bytes, exported_bytes: bytes) -> tuple[float, float]:
        """``(exported ns, dense ns)``: the exported whole model against the dense one, best of
        ``ROUNDS`` interleaved rounds (cached under both models' digests). The exporter reverts
        sparse choices until the exported model is at least as fast as dense (the contract)."""
        key = f"confirm:{_digest(exported_bytes)[:16]} vs {_digest(dense_bytes)[:16]}"
        keys = (key + ":dense", key + ":exported")
        if any(k not in self.times for k in keys):
            best = interleaved_best(self._time, [(keys[0], dense_bytes, model_input(dense_bytes)),
                                                 (keys[1], exported_bytes, model_input(exported_bytes))],
                                    ROUNDS)
            for k, ns in best.items():
                self.times[k] = ns / 1e9
        return 1e9 * self.times[keys[1]], 1e9 * self.times[keys[0]]

    def builtin_block(self, dtype: str) -> int:
        """TFLite's block width for its sparse FC kernel (what ``formats`` asks a cost for)."""
        return TFLITE_BLOCKS[dtype]
