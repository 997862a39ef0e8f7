"""Schedules: tfmot's semantics, Scalpel's staged thresholds, Han's iterative rounds, and
acceptance of tfmot's own schedule objects."""
import os
import subprocess
import sys
import textwrap

import pytest

import tfscalpel


def test_constant_sparsity_follows_tfmot_rule():
    s = tfscalpel.ConstantSparsity(0.8, begin_step=10, end_step=50, frequency=20)
    assert [s(step)[0] for step in (0, 9, 10, 29, 30, 50, 51, 70)] == [
        False, False, True, False, True, True, False, False]
    assert s(30)[1] == 0.8
    open_end = tfscalpel.ConstantSparsity(0.5, begin_step=0, frequency=100)
    assert open_end(10**6)[0]


def test_polynomial_decay_values():
    s = tfscalpel.PolynomialDecay(0.0, 0.9, begin_step=100, end_step=300, power=3, frequency=50)
    assert s(100) == (True, 0.0)
    update, mid = s(200)
    assert update and mid == pytest.approx(0.9 - 0.9 * 0.5**3)
    assert s(300) == (True, 0.9)
    assert s(350) == (False, 0.9)  # past end_step: no more updates (tfmot)
    assert not s(125)[0]


def test_staged_threshold_rises_by_stage():
    s = tfscalpel.StagedThreshold([0.2, 0.5, 0.8], stage_steps=100, begin_step=10, frequency=1000)
    assert s(5) == (False, 0.0)
    assert s(10) == (True, 0.2)
    assert s(60) == (False, 0.2)
    assert s(110) == (True, 0.5)
    assert s(210) == (True, 0.8)
    assert s(400) == (False, 0.8)
    assert s.mode == "threshold"


def test_iterative_pruning_rounds():
    s = tfscalpel.IterativePruning([0.5, 0.8, 0.9], round_steps=40, begin_step=0)
    assert s(0) == (True, 0.5)
    assert s(39) == (False, 0.5)
    assert s(40) == (True, 0.8)
    assert s(80) == (True, 0.9)
    assert s(120) == (False, 0.9)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda: tfscalpel.ConstantSparsity(1.0), "target_sparsity must be a number in \\[0, 1\\)"),
        (lambda: tfscalpel.ConstantSparsity(-0.1), "target_sparsity"),
        (lambda: tfscalpel.PolynomialDecay(0.0, 0.9, begin_step=100, end_step=50), "ends before it begins"),
        (lambda: tfscalpel.ConstantSparsity(0.5, begin_step=10, end_step=5), "ends before it begins"),
        (lambda: tfscalpel.PolynomialDecay(0.0, 0.9, 0, 10, frequency=0), "frequency must be an integer >= 1"),
        (lambda: tfscalpel.StagedThreshold([0.5, 0.2], stage_steps=10), "must not decrease"),
        (lambda: tfscalpel.IterativePruning([0.5, 1.2], round_steps=10), "sparsities\\[1\\]"),
    ],
)
def test_bad_schedule_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_tfmot_schedules_are_accepted(tmp_path):
    """tfmot flips tf.keras for the whole process, so this runs in a subprocess."""
    script = textwrap.dedent("""
        import keras, numpy as np
        import tfscalpel
        import tensorflow_model_optimization as tfmot
        s = tfmot.sparsity.keras.PolynomialDecay(0.1, 0.8, begin_step=0, end_step=100, frequency=10)
        c = tfmot.sparsity.keras.ConstantSparsity(0.6, begin_step=5)
        ours = tfscalpel.get_schedule(s)
        assert ours == tfscalpel.PolynomialDecay(0.1, 0.8, 0, 100, power=3, frequency=10), ours
        assert tfscalpel.get_schedule(c) == tfscalpel.ConstantSparsity(0.6, 5)
        for step in (0, 10, 50, 55, 100, 110):
            u, v = s(np.int64(step))
            assert (bool(u), round(float(v), 5)) == (ours(step)[0], round(ours(step)[1], 5)), step
        m = keras.Sequential([keras.Input((8,)), keras.layers.Dense(4)])
        p = tfscalpel.prune(m, schedule=c, pattern="unstructured")
        assert isinstance(p.layers[0], tfscalpel.GroupPrunedDense)
        print("ok")
    """)
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, env=env)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr[-3000:]
