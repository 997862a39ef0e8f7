"""benchmarks/bench_architectures.py in --quick mode on two small models: the ResNet-18-style
net (node plan: gates, strip) and a small Transformer encoder (group plan on MultiHeadAttention
and the FFN), trained on a slice of MNIST, exported and timed. The table's rows and columns, the
exact dense MAC counts, and that pruning removes MACs while the stripped and exported models
compute what the pruned one does. No timed assertion: latencies are only required to exist."""
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

import bench_architectures as bench  # noqa: E402

D, FF, LAYERS, HEADS = 32, 64, 2, 2


@pytest.fixture(scope="module")
def rows(tmp_path_factory):
    # A small encoder keeps the test short; the benchmark's is d=256, 4 layers.
    saved = bench.BUILDERS["transformer"]
    bench.BUILDERS["transformer"] = lambda: bench.transformer(d=D, heads=HEADS, ff=FF,
                                                              layers=LAYERS)
    try:
        cache = str(tmp_path_factory.mktemp("cache"))
        return (bench.run("resnet18", quick=True, cache_dir=cache, rounds=2)
                + bench.run("transformer", quick=True, cache_dir=cache, rounds=2))
    finally:
        bench.BUILDERS["transformer"] = saved


def test_rows_and_exact_dense_macs(rows):
    assert [(r["model"], r["variant"]) for r in rows] == [
        ("ResNet-18", "dense"), ("ResNet-18", "pruned"),
        ("Transformer", "dense"), ("Transformer", "pruned")]
    target = bench.cpu_target()
    assert [r["plan"] for r in rows] == ["-", target, "-", target]
    # stem 16x16x(3x3x1x16); per stage s (width w, input c, side n): conv1 n*n*9*c*w, conv2
    # n*n*9*w*w, each repeated block 2 * n*n*9*w*w, projections n*n*c*w; head 128x10
    stem = 16 * 16 * 9 * 16
    stages = sum(n * n * (9 * c * w + 3 * 9 * w * w + (c * w if c != w else 0))
                 for n, c, w in ((16, 16, 16), (8, 16, 32), (4, 32, 64), (2, 64, 128)))
    assert rows[0]["macs"] == stem + stages + 128 * 10 == 8_688_896
    seq, feat = bench.SEQ, bench.ROW + bench.SEQ
    per_layer = seq * (4 * D * D + 2 * D * FF) + 2 * seq * seq * D
    assert rows[2]["macs"] == seq * feat * D + LAYERS * per_layer + D * 10
    for r in rows:
        assert 0 <= r["accuracy"] <= 100 and r["us_b1"] > 0 and r["us_b8"] > 0


def test_pruned_models_lose_macs_and_match_their_gated_twins(rows):
    resnet_dense, resnet, tf_dense, tf = rows
    assert resnet["macs"] < resnet_dense["macs"]
    kept, total = resnet["nodes"]
    assert 0 < kept < total
    # group pruning at 90 % on every projection: the attention products stay dense
    assert tf["macs"] < 0.5 * tf_dense["macs"]
    assert tf["params"] < tf_dense["params"]
    for r in (resnet, tf):
        assert r["strip_err"] < 1e-4
    for r in rows:
        assert r["tflite_err"] < 1e-3


def test_table_and_verdicts(rows):
    text = bench.table(rows).splitlines()
    assert text[0].split()[:5] == ["model", "variant", "plan", "acc", "%"]
    assert len(text) == 2 + len(rows)
    verdicts = bench.verdicts(rows)
    assert [v.split(":")[0] for v in verdicts] == ["Transformer", "ResNet-18"]
    assert all(v.endswith(("met", "NOT met")) for v in verdicts)
