"""Fuzz campaign over the whole model loader: byte flips and truncations of exported custom-op
models, each loaded with ``tflite_export.runtime.load`` (through a path and through bytes, in
turn) and run once, in worker processes that may die. Prints one table of outcomes.

The seed models are small exported Keras models: 37 -> 64 -> 20 -> 13 Dense, every layer forced
to TFS_GROUP_SPARSE_FC with ragged tails (float32, int8, int8 with int8 I/O), and an int8
Conv2D -> Flatten -> custom-op Dense -> Dense. Each trial flips 1-8 bytes
(half of the trials aim at the custom ops' parameter blobs and the flatbuffer's structure,
half anywhere) or, one trial in
ten, truncates the file. A trial ends as
  ran          the corrupt model loaded and ran (the flip changed only values);
  clean error  load() or run() raised a Python exception (counted by type);
  crash        the worker process died (signal or abort): a bug;
  hang         no answer within --timeout seconds: a bug;
  over cap     the worker's peak memory grew by more than the runtime's tensor cap in a trial.

    python benchmarks/fuzz_runtime.py [--trials 16000] [--seed 0] [--timeout 60] [--workers 1]

tests/test_runtime_fuzz.py runs a few hundred trials of the same harness in the suite.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import platform
import select
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

#: A trial's growth of the worker's peak resident memory above this counts as "over cap".
OVER_CAP_BYTES = (1 << 30) + (256 << 20)


@dataclass
class Seed:
    """A model to mutate and the byte ranges of its custom ops (parameter blobs)."""

    name: str
    data: bytes
    targets: List[Tuple[int, int]]


@dataclass
class Tally:
    trials: int = 0
    ran: int = 0
    clean: collections.Counter = field(default_factory=collections.Counter)
    crashes: List[str] = field(default_factory=list)
    hangs: List[str] = field(default_factory=list)
    over_cap: List[str] = field(default_factory=list)
    peak_growth: int = 0
    #: (outcome, "path" | "bytes") -> trials; outcome: ran, clean, crash, hang, over cap
    by_mode: collections.Counter = field(default_factory=collections.Counter)


# ------------------------------------------------------------------------------------------------
# Seeds and mutations


def custom_op_targets(data: bytes) -> List[Tuple[int, int]]:
    """File byte ranges of every custom op's constant inputs (the parameter blobs) and of the
    flatbuffer's structure (every byte outside buffer data: tables, vectors, quantization)."""
    from tensorflow.lite.python import schema_py_generated as schema

    from tflite_export import flatbuffer

    root = schema.Model.GetRootAs(data, 0)
    offsets = flatbuffer.buffer_data_offsets(data)
    spans = sorted((o, o + root.Buffers(b).DataLength()) for b, o in offsets.items())
    ranges, start = [], 0
    for lo, hi in spans:
        if lo > start:
            ranges.append((start, lo))
        start = max(start, hi)
    if start < len(data):
        ranges.append((start, len(data)))
    for s in range(root.SubgraphsLength()):
        sg = root.Subgraphs(s)
        for k in range(sg.OperatorsLength()):
            op = sg.Operators(k)
            code = root.OperatorCodes(op.OpcodeIndex())
            if max(code.BuiltinCode(), code.DeprecatedBuiltinCode()) != schema.BuiltinOperator.CUSTOM:
                continue
            for j in range(op.InputsLength()):
                b = sg.Tensors(op.Inputs(j)).Buffer()
                if b in offsets:
                    ranges.append((offsets[b], offsets[b] + root.Buffers(b).DataLength()))
    return ranges


def exported_seeds() -> List[Seed]:
    """float32 and int8 exports of a small stripped Dense model, custom op on every layer."""
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import numpy as np

    import export_testlib
    from tflite_export import exporter
    from tflite_export.converter import convert_keras

    names = ["dense", "dense_1", "dense_2"]
    model = export_testlib.stripped_model(37, [(64, "relu"), (20, "relu6"), (13, None)], g=4,
                                          sparsity=0.6, seed=5)
    calib = np.random.default_rng(6).standard_normal((64, 37)).astype(np.float32)
    seeds = []
    for name, dense in (("float32", convert_keras(model)),
                        ("int8", convert_keras(model, "int8", calib)),
                        ("int8-io", convert_keras(model, "int8", calib, int8_io=True))):
        res = exporter.rewrite_tflite(dense, formats={n: "custom" for n in names},
                                      group_sizes={"dense": 4, "dense_1": 8, "dense_2": 16},
                                      keras_model=model)
        seeds.append(Seed(name, res.model_bytes, custom_op_targets(res.model_bytes)))
    seeds.append(_conv_seed())
    return seeds


def _conv_seed() -> Seed:
    """int8 Conv2D -> Flatten -> custom-op Dense -> Dense: per-channel conv quantization, the
    frozen RESHAPE and a custom op fed by an intermediate tensor."""
    import keras
    import numpy as np

    from tflite_export import exporter

    keras.utils.set_random_seed(7)
    model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(3, 3, activation="relu"),
                              keras.layers.Flatten(), keras.layers.Dense(20, name="dense"),
                              keras.layers.Dense(6, name="dense_1")])
    k, b = model.layers[2].get_weights()
    k[np.random.default_rng(8).random(k.shape) < 0.6] = 0
    model.layers[2].set_weights([k, b])
    calib = np.random.default_rng(9).standard_normal((32, 8, 8, 1)).astype(np.float32)
    res = exporter.export(model, quantize="int8", representative_data=calib,
                          formats={"dense": "custom"}, group_sizes={"dense": 8})
    return Seed("conv-int8", res.model_bytes, custom_op_targets(res.model_bytes))


def mutate(rng, seed: Seed, trial: int) -> Tuple[bytes, str]:
    """A corrupt copy of the seed and a short description of what was done to it."""
    data = bytearray(seed.data)
    if rng.random() < 0.1:
        cut = int(rng.integers(0, len(data)))
        return bytes(data[:cut]), f"truncated to {cut}"
    aimed = trial % 2 == 0 and seed.targets
    edits = []
    for _ in range(int(rng.integers(1, 9))):
        if aimed:
            lo, hi = seed.targets[int(rng.integers(0, len(seed.targets)))]
            pos = int(rng.integers(lo, hi))
        else:
            pos = int(rng.integers(0, len(data)))
        if rng.random() < 0.5:
            data[pos] ^= 1 << int(rng.integers(0, 8))
        else:
            data[pos] = int(rng.integers(0, 256))
        edits.append(pos)
    return bytes(data), f"{'aimed' if aimed else 'any'} bytes {edits}"


# ------------------------------------------------------------------------------------------------
# The worker: loads and runs models sent on stdin, one JSON line per answer on stdout


def _peak_rss() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    return 0


def _reset_peak() -> None:
    try:  # Linux >= 4.0: writing 5 resets the peak resident set size
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass


def worker_main() -> None:
    sys.path.insert(0, ROOT)
    import numpy as np

    from tflite_export import runtime

    out = os.fdopen(os.dup(1), "w")
    os.dup2(os.open(os.devnull, os.O_WRONLY), 1)  # native chatter stays off the answer pipe
    inp = sys.stdin.buffer
    path = os.path.join(tempfile.mkdtemp(prefix="tfs_fuzz_"), "model.tflite")
    while True:
        head = inp.read(5)
        if len(head) < 5:
            return
        via, n = struct.unpack("<BI", head)
        data = inp.read(n)
        _reset_peak()
        base = _peak_rss()
        try:
            if via == 1:
                with open(path, "wb") as f:
                    f.write(data)
            with runtime.load(path if via == 1 else data) as rt:
                xs = [np.ones(tuple(3 if d < 0 else d for d in i.shape), i.dtype)
                      for i in rt.input_details]
                rt.run(*xs)
            answer = {"outcome": "ran"}
        except Exception as e:  # noqa: BLE001 - every Python exception is a clean refusal
            answer = {"outcome": "clean", "type": type(e).__name__, "message": str(e)[:300]}
        answer["growth"] = _peak_rss() - base
        out.write(json.dumps(answer) + "\n")
        out.flush()


class Worker:
    """One worker process; restarted by the campaign after a crash or a hang."""

    def __init__(self):
        self.log = tempfile.TemporaryFile()
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
        self.proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), "--worker"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, env=env)
        self.buf = b""

    def ask(self, data: bytes, via_path: bool, timeout: float) -> Optional[dict]:
        """The answer, or None if the process died ("crash") or did not answer ("hang")."""
        try:
            self.proc.stdin.write(struct.pack("<BI", int(via_path), len(data)) + data)
            self.proc.stdin.flush()
        except BrokenPipeError:
            return None
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
            chunk = os.read(fd, 65536)
            if not chunk:
                return None
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)

    def death(self) -> str:
        """How the process ended, with the last line it wrote to stderr."""
        rc = self.proc.wait()
        self.log.seek(0)
        lines = [l for l in self.log.read().decode(errors="replace").splitlines() if l.strip()]
        return f"exit {rc}" + (f": {lines[-1][:200]}" if lines else "")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()
        self.log.close()


def campaign(seeds: Sequence[Seed], trials: int, seed: int = 0, timeout: float = 60.0,
             progress=None) -> Tally:
    """Run `trials` mutated models through workers; crashes and hangs restart the worker."""
    import numpy as np

    rng = np.random.default_rng(seed)
    tally = Tally()
    worker = Worker()
    try:
        for trial in range(trials):
            s = seeds[trial % len(seeds)]
            data, what = mutate(rng, s, trial // len(seeds))
            # Each seed in turn; per seed, aimed/anywhere alternate (mutate) and path/bytes
            # alternate every two rounds, so every seed meets all four combinations.
            via_path = (trial // (2 * len(seeds))) % 2 == 1
            label = f"trial {trial} ({s.name}, {'path' if via_path else 'bytes'}, {what})"
            tally.trials += 1
            mode = "path" if via_path else "bytes"
            tally.by_mode[("trials", mode)] += 1
            try:
                answer = worker.ask(data, via_path, timeout)
            except TimeoutError:
                tally.hangs.append(label)
                tally.by_mode[("hang", mode)] += 1
                worker.close()
                worker = Worker()
                continue
            if answer is None:
                tally.crashes.append(f"{label}: {worker.death()}")
                tally.by_mode[("crash", mode)] += 1
                worker.close()
                worker = Worker()
                continue
            if answer["outcome"] == "ran":
                tally.ran += 1
                tally.by_mode[("ran", mode)] += 1
            else:
                tally.clean[answer["type"]] += 1
                tally.by_mode[("clean", mode)] += 1
            tally.peak_growth = max(tally.peak_growth, answer["growth"])
            if answer["growth"] > OVER_CAP_BYTES:
                tally.over_cap.append(f"{label}: +{answer['growth'] >> 20} MiB")
                tally.by_mode[("over cap", mode)] += 1
            if progress and (trial + 1) % progress == 0:
                print(f"  {trial + 1}/{trials}: {len(tally.crashes)} crashes, "
                      f"{len(tally.hangs)} hangs", file=sys.stderr, flush=True)
    finally:
        worker.close()
    return tally


# ------------------------------------------------------------------------------------------------


def _cpu() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            info = f.read()
        model = next(l.split(":", 1)[1].strip() for l in info.splitlines() if l.startswith("model name"))
        flags = next(l.split(":", 1)[1].split() for l in info.splitlines() if l.startswith("flags"))
        isa = [f for f in ("avx2", "avx512f", "avx512_vnni", "amx_tile") if f in flags]
        return f"{model} ({', '.join(isa)})"
    except (OSError, StopIteration):
        return platform.machine()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--trials", type=int, default=16000)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=60.0, help="seconds before a trial is a hang")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.worker:
        worker_main()
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    sys.path.insert(0, ROOT)
    seeds = exported_seeds()
    t0, c0 = time.monotonic(), os.times()
    tally = campaign(seeds, args.trials, args.seed, args.timeout, progress=1000)
    wall = time.monotonic() - t0
    c1 = os.times()
    cpu = (c1.children_user - c0.children_user) + (c1.children_system - c0.children_system)
    print(f"Runtime fuzz campaign: seed {args.seed}, CPU {_cpu()}, Python {platform.python_version()}")
    print("seed models: " + ", ".join(f"{s.name} {len(s.data)} B" for s in seeds))

    def row(name, total, key=None):
        split = [tally.by_mode[(key, m)] for m in ("path", "bytes")] if key else ["", ""]
        return (name, total, *split)

    rows = [row("trials", tally.trials, "trials"),
            row("ran (flip changed only values)", tally.ran, "ran"),
            row("clean Python errors", sum(tally.clean.values()), "clean")]
    rows += [row(f"  {k}", v) for k, v in tally.clean.most_common()]
    rows += [row("process deaths (crash)", len(tally.crashes), "crash"),
             row("hangs (> timeout)", len(tally.hangs), "hang"),
             row(f"peak memory growth > {OVER_CAP_BYTES >> 20} MiB", len(tally.over_cap), "over cap"),
             row("largest peak memory growth in a trial", f"{tally.peak_growth >> 20} MiB"),
             row("wall time", f"{wall:.0f} s"), row("worker CPU time", f"{cpu:.0f} s"),
             row("per trial", f"{1000 * wall / max(tally.trials, 1):.1f} ms")]
    width = max(len(r[0]) for r in rows)
    print(f"{'':<{width}}  {'total':>8}  {'via path':>9}  {'via bytes':>9}")
    for name, total, path, data in rows:
        print(f"{name:<{width}}  {total:>8}  {path:>9}  {data:>9}")
    for kind, items in (("crash", tally.crashes), ("hang", tally.hangs), ("over cap", tally.over_cap)):
        for item in items[:20]:
            print(f"{kind}: {item}")
    return 1 if tally.crashes or tally.hangs or tally.over_cap else 0


if __name__ == "__main__":
    sys.exit(main())
