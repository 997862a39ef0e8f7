"""distributed_fit: the custom loop for strategies where Keras 3's fit fails
(MultiWorkerMirroredStrategy, keras-team/keras#20585), with the same pruning steps as fit."""
import json
import os
import socket
import subprocess
import sys
import textwrap

import keras
import numpy as np
import tensorflow as tf

import tfscalpel

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

_TRAIN = """
keras.utils.set_random_seed(0)
with strategy.scope():
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, name="a"),
                              keras.layers.Dense(4, name="b")])
    pruned = tfscalpel.prune(model, pattern="unstructured", schedule=tfscalpel.PolynomialDecay(
        0.0, 0.75, begin_step=0, end_step=6, frequency=2))
    optimizer = keras.optimizers.SGD(0.05)
rng = np.random.default_rng(0)
x = rng.standard_normal((64, 16)).astype("float32")
y = rng.standard_normal((64, 4)).astype("float32")
options = tf.data.Options()
options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
data = tf.data.Dataset.from_tensor_slices((x, y)).batch(8).with_options(options)
history = tfscalpel.distributed_fit(pruned, data, "mse", optimizer, epochs=1, strategy=strategy)
masks = [keras.ops.convert_to_numpy(l.pruning_mask) for l in tfscalpel.pruned_layers(pruned)]
"""


def test_distributed_fit_follows_the_pruning_schedule_under_mirrored_strategy():
    # In its own process: TF's collective ops key their instances per process, and a second
    # MirroredStrategy later in the same process (tests/test_training.py) collided with this
    # one's cached instances ("Shape mismatch in the collective instance").
    script = textwrap.dedent("""
        import json
        import tensorflow as tf
        cpu = tf.config.list_physical_devices("CPU")[0]  # two replicas, as tests/conftest.py
        tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
        import keras, numpy as np, tfscalpel
        strategy = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    """) + _TRAIN + textwrap.dedent("""
        print("RESULT", json.dumps({
            "steps": [int(keras.ops.convert_to_numpy(l.pruning_step.value))
                      for l in tfscalpel.pruned_layers(pruned)],
            "sparsity": [round(l.mask_sparsity(), 4) for l in tfscalpel.pruned_layers(pruned)],
            "losses": [float(v) for v in history["loss"]]}))
    """)
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    out = subprocess.run([sys.executable, "-c", script], env=env, text=True, capture_output=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    line = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert line, (out.stdout, out.stderr[-3000:])
    result = json.loads(line[0][len("RESULT "):])
    # 8 steps: update_pruning before each, the last at step 7 (schedule finished at 6).
    assert result["steps"] == [7, 7]
    assert result["sparsity"] == [0.75, 0.75]
    assert len(result["losses"]) == 1 and np.isfinite(result["losses"][0])


def _free_ports(n):
    sockets = [socket.socket() for _ in range(n)]
    for s in sockets:
        s.bind(("127.0.0.1", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def test_two_local_workers_of_multi_worker_mirrored_strategy_get_identical_masks():
    ports = _free_ports(2)
    script = textwrap.dedent("""
        import hashlib, json, os, sys
        os.environ["TF_CONFIG"] = json.dumps({
            "cluster": {"worker": [f"127.0.0.1:{p}" for p in %r]},
            "task": {"type": "worker", "index": int(sys.argv[1])}})
        import keras, numpy as np, tensorflow as tf, tfscalpel
        strategy = tf.distribute.MultiWorkerMirroredStrategy()
    """ % ports) + _TRAIN + textwrap.dedent("""
        weights = [keras.ops.convert_to_numpy(w) for w in pruned.trainable_variables]
        digest = lambda arrays: hashlib.sha1(b"".join(a.tobytes() for a in arrays)).hexdigest()
        print("RESULT", json.dumps({"sparsity": [round(float(1 - m.mean()), 4) for m in masks],
                                    "masks": digest(masks), "weights": digest(weights)}))
    """)
    env = dict(os.environ, PYTHONPATH=REPO, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_CONFIG", None)
    workers = [subprocess.Popen([sys.executable, "-c", script, str(i)], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for i in range(2)]
    results = []
    for w in workers:
        out, err = w.communicate(timeout=300)
        assert w.returncode == 0, err[-3000:]
        line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")]
        assert line, (out, err[-3000:])
        results.append(json.loads(line[0][len("RESULT "):]))
    assert results[0]["sparsity"] == [0.75, 0.75]
    assert results[0] == results[1]
