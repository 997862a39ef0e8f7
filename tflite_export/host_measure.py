"""Choose each layer's format by measuring on this machine (``export(..., target="host")``).

A cost profile fitted on one CPU is a guess on another: the same int8 model was 1.8x faster than
dense on the AVX2 machine its profile came from and 1.2x *slower* on an AVX-512 VNNI one. So for
the local runtime the exporter can measure instead of predict:

1. the converted dense model is timed through the runtime (XNNPACK, one thread, batch 1);
2. layer by layer, every candidate format of that layer — the custom op at each group width g
   that stores something, and TFLite's block-sparse FC where it applies — is written into the
   model (the layers before it as already chosen, the layers after it dense) and the *whole
   model* is timed: the custom node's real cost is measured with it, the LiteRT per-node
   overhead and the split of XNNPACK's delegated partition included;
3. a layer takes its fastest candidate only when that beats the model as it stands by
   ``margin`` (default 5 %); otherwise it stays dense;
4. the final model is timed against the dense one in interleaved rounds; if it is not faster,
   every layer goes back to dense. On the machine that measured it, the export is never slower
   than dense (within the timing noise the rounds leave).

Results are cached under ``<cache>/host_costs/`` (``$TFSCALPEL_CACHE`` or ``~/.cache/tfscalpel``),
keyed by the dense model's bytes, the options and :func:`tflite_export.host_info.fingerprint` —
CPU model, ISA features, the kernel library's build and LiteRT's version — so a second export
costs nothing and a new CPU or kernel build measures again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import sys
from typing import Callable, Dict, List, Mapping, Optional, Tuple

import numpy as np

from tflite_export import host_info
from tflite_export.atomic import write_atomic
from tflite_export.quiet import filtered_stderr, litert_noise

#: Bump when the measurement procedure changes, so older cached choices are not reused.
PROCEDURE_VERSION = 1
DEFAULT_MARGIN = 1.05
_GROUP_SIZES = (1, 2, 4, 8, 16)

Timer = Callable[[bytes], float]
Candidate = Tuple[str, int]  # ("dense", 0) | ("custom", g) | ("builtin_sparse", 0)


@dataclasses.dataclass(frozen=True)
class Measurement:
    """The whole model's time with one layer in one candidate format."""

    layer: str
    format: str  # "dense" | "custom" | "builtin_sparse"
    g: int  # custom: group width; else 0
    seconds: float

    @property
    def label(self) -> str:
        return f"custom g={self.g}" if self.format == "custom" else self.format


@dataclasses.dataclass(frozen=True)
class HostChoice:
    """Measured per-layer formats, ready for ``rewrite_tflite(formats=, group_sizes=)``."""

    formats: Dict[str, str]
    group_sizes: Dict[str, int]
    dense_seconds: float  # the dense model, final interleaved rounds
    chosen_seconds: float  # the chosen model, same rounds
    measurements: Tuple[Measurement, ...]
    fingerprint: str
    from_cache: bool = False
    note: str = ""

    def layer_seconds(self, layer: str) -> Dict[str, float]:
        """{candidate label: whole-model seconds} measured for ``layer``."""
        return {m.label: m.seconds for m in self.measurements if m.layer == layer}

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d.pop("from_cache")
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> "HostChoice":
        d = dict(d)
        d["measurements"] = tuple(Measurement(**m) for m in d["measurements"])
        return cls(**d, from_cache=True)


def time_model(model_bytes: bytes, target_seconds: float = 0.02, repeats: int = 5) -> float:
    """Seconds per batch-1 run of ``model_bytes`` through the runtime on one thread: C-timed
    loops of ~``target_seconds / repeats`` each, the best of ``repeats`` (the least disturbed)."""
    from tflite_export import runtime

    rng = np.random.default_rng(0)
    with filtered_stderr(_timing_noise), runtime.load(model_bytes, num_threads=1) as rt:
        inputs = []
        for info in rt.input_details:
            shape = tuple(1 if d < 0 else d for d in info.shape) or (1,)
            if np.issubdtype(info.dtype, np.integer):
                inputs.append(rng.integers(-128, 128, shape).astype(info.dtype))
            else:
                inputs.append(rng.standard_normal(shape).astype(info.dtype))
        rt.run(*inputs)
        first = rt.time_run(10)
        iterations = int(min(max(target_seconds / repeats / max(first, 1e-7), 10), 100_000))
        return min(rt.time_run(iterations) for _ in range(repeats))


def _timing_noise(line: bytes) -> bool:
    """LiteRT's notes, and its warning on loading every block-sparse candidate (expected here)."""
    return litert_noise(line) or b"Sparsity tensors may not yet be fully supported" in line


def _default_cache_dir() -> str:
    from tfscalpel.datasets import cache_dir  # the project's one cache location

    return os.path.join(str(cache_dir()), "host_costs")


def _cache_key(dense_bytes: bytes, margin: float, fingerprint: str) -> str:
    h = hashlib.sha256()
    h.update(f"v{PROCEDURE_VERSION}|margin={margin!r}|{fingerprint}|".encode())
    h.update(bytes(dense_bytes))
    return h.hexdigest()[:32]


def _build(dense_bytes: bytes, assignment: Mapping[str, Candidate], keras_model) -> bytes:
    from tflite_export.exporter import rewrite_tflite

    formats = {name: fmt for name, (fmt, _) in assignment.items()}
    group_sizes = {name: g for name, (fmt, g) in assignment.items() if fmt == "custom"}
    return rewrite_tflite(dense_bytes, target=_NOMINAL_PROFILE, formats=formats,
                          group_sizes=group_sizes, keras_model=keras_model).model_bytes


# Forced formats make the exporter's prediction irrelevant, but it still needs a profile for the
# report's predicted column; this one covers both dtypes.
_NOMINAL_PROFILE = "x86-avx2"


def _layer_names(dense_bytes: bytes, keras_model) -> List[str]:
    from tflite_export.exporter import rewrite_tflite

    report = rewrite_tflite(dense_bytes, target=_NOMINAL_PROFILE, keras_model=keras_model).report
    return [layer.layer for layer in report.layers]


def _interleaved_best(timer: Timer, models: List[bytes], rounds: int) -> List[float]:
    """Best time of each model over ``rounds`` rounds in which the models take turns, so a load
    change on a shared machine hits all of them alike."""
    best = [float("inf")] * len(models)
    for _ in range(rounds):
        for i, m in enumerate(models):
            best[i] = min(best[i], timer(m))
    return best


def _log(progress, message: str) -> None:
    if progress:
        print(f"[host measurement] {message}", file=sys.stderr, flush=True)


def choose_formats(dense_bytes: bytes, keras_model=None, timer: Optional[Timer] = None,
                   margin: float = DEFAULT_MARGIN, use_cache: bool = True,
                   cache_dir: Optional[str] = None, final_rounds: int = 3,
                   progress: bool = True) -> HostChoice:
    """Measure every FULLY_CONNECTED layer's candidate formats on this host (see the module
    docstring) and return the choice.

    Args:
        dense_bytes: the converter's dense ``.tflite`` (float32 or full int8).
        keras_model: the Keras model it came from, for layer names (optional).
        timer: ``model bytes -> seconds``; default :func:`time_model` (tests inject their own).
        margin: a sparse format must be at least this factor faster than the model without it.
        use_cache: read and write the per-host cache.
        cache_dir: where the cache lives (default ``<tfscalpel cache>/host_costs``).
        final_rounds: interleaved rounds of the final dense-vs-chosen check.
        progress: print one line per layer to stderr.
    """
    if not margin >= 1.0:
        raise ValueError(f"margin must be a number >= 1.0, got {margin!r}")
    timer = timer or time_model
    fingerprint = host_info.fingerprint()
    path = None
    if use_cache:
        key = _cache_key(dense_bytes, margin, fingerprint)
        path = os.path.join(cache_dir or _default_cache_dir(), key + ".json")
        if os.path.isfile(path):
            try:
                with open(path, encoding="utf-8") as f:
                    choice = HostChoice.from_dict(json.load(f))
                _log(progress, f"cached choice for this host reused ({path})")
                return choice
            except (OSError, ValueError, TypeError, KeyError):
                pass  # an unreadable cache entry is measured again and overwritten

    names = _layer_names(dense_bytes, keras_model)
    current: Dict[str, Candidate] = {name: ("dense", 0) for name in names}
    dense_model = _build(dense_bytes, current, keras_model)
    current_seconds = timer(dense_model)
    measurements: List[Measurement] = []
    for name in names:
        measurements.append(Measurement(name, "dense", 0, current_seconds))
        best: Optional[Measurement] = None
        for fmt, g in [("custom", g) for g in _GROUP_SIZES] + [("builtin_sparse", 0)]:
            try:
                model = _build(dense_bytes, {**current, name: (fmt, g)}, keras_model)
            except ValueError:
                continue  # not representable (all-zero layer, shape the builtin cannot take)
            m = Measurement(name, fmt, g, timer(model))
            measurements.append(m)
            if best is None or m.seconds < best.seconds:
                best = m
        if best is not None and best.seconds * margin < current_seconds:
            current[name] = (best.format, best.g)
            verdict = f"{best.label}, {current_seconds / best.seconds:.2f}x the model without it"
            current_seconds = best.seconds
        else:
            verdict = "dense" + (f" (best sparse: {best.label}, "
                                 f"{current_seconds / best.seconds:.2f}x < {margin:.2f}x)"
                                 if best else " (no sparse format applies)")
        _log(progress, f"{name}: {verdict}")

    chosen_model = _build(dense_bytes, current, keras_model)
    dense_s, chosen_s = _interleaved_best(timer, [dense_model, chosen_model], final_rounds)
    note = ""
    if any(fmt != "dense" for fmt, _ in current.values()) and not chosen_s < dense_s:
        note = (f"the chosen model measured {chosen_s * 1e6:.2f} us against {dense_s * 1e6:.2f} us "
                "dense in the final rounds: every layer kept dense")
        _log(progress, note)
        current = {name: ("dense", 0) for name in names}
        chosen_s = dense_s
    choice = HostChoice(
        formats={name: fmt for name, (fmt, _) in current.items()},
        group_sizes={name: g for name, (fmt, g) in current.items() if fmt == "custom"},
        dense_seconds=dense_s, chosen_seconds=chosen_s, measurements=tuple(measurements),
        fingerprint=fingerprint, note=note)
    if path is not None:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        write_atomic(path, json.dumps(choice.to_dict(), indent=1))
    return choice
