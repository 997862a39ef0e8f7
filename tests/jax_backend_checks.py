"""The training side of tfscalpel under KERAS_BACKEND=jax, run by tests/test_jax_backend.py in a
subprocess (Keras fixes its backend once per process).

    KERAS_BACKEND=jax python tests/jax_backend_checks.py OUT_DIR

Writes ``OUT_DIR/results.json`` (the numbers the test asserts), ``OUT_DIR/calibrated.keras``
(a pruned model) and ``OUT_DIR/stats.npz`` (its calibration statistics computed with JAX), which
the test recomputes with TensorFlow.
"""
import json
import os
import sys
import warnings

import numpy as np


def main(out_dir):
    import keras

    import tflite_export
    import tfscalpel

    assert keras.backend.backend() == "jax", keras.backend.backend()
    # int64 pruning_step becomes int32 without jax_enable_x64; that is harmless here.
    warnings.filterwarnings("ignore", message=".*int64.*")
    results = {"backend": keras.backend.backend()}
    keras.utils.set_random_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((64, 16), dtype=np.float32)
    y = rng.integers(0, 4, 64)
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    # prune + fit with UpdatePruningStep: masks change mid-epoch (frequency 1), which needs the
    # callback to read the kernels that JAX's fit keeps in its own state.
    dense = keras.Sequential([keras.Input((16,)),
                              keras.layers.Dense(32, activation="relu", name="fc1"),
                              keras.layers.Dense(4, name="fc2")])
    pruned = tfscalpel.prune(dense, schedule=tfscalpel.PolynomialDecay(0.0, 0.75, 0, 6,
                                                                       frequency=1),
                             group_size=4)
    pruned.compile("adam", loss)
    pruned.fit(x, y, epochs=2, batch_size=16, verbose=0,
               callbacks=[tfscalpel.UpdatePruningStep()])
    layers = tfscalpel.pruned_layers(pruned)
    # Keras 3 runs batch ends on a thread (on thread-safe backends such as JAX) unless a callback
    # defines a synchronous on_train_batch_end; ours must not turn that off, except summaries
    # written every few batches.
    results["async_batch_end"] = [keras.callbacks.CallbackList(list(callbacks))._async_train
                                  for callbacks in ([tfscalpel.UpdatePruningStep(),
                                                     tfscalpel.PruningSummaries(out_dir)],
                                                    [tfscalpel.PruningSummaries(out_dir, 1)])]
    results["sparsity"] = [layer.mask_sparsity() for layer in layers]
    results["pruning_step"] = [int(keras.ops.convert_to_numpy(layer.pruning_step))
                               for layer in layers]
    results["masked_nonzero_where_pruned"] = int(sum(
        np.count_nonzero(keras.ops.convert_to_numpy(layer.masked_kernel())[
            keras.ops.convert_to_numpy(layer.pruning_mask) == 0]) for layer in layers))

    # save / load
    path = os.path.join(out_dir, "pruned.keras")
    pruned.save(path)
    loaded = keras.models.load_model(path)
    results["reload_max_diff"] = float(np.max(np.abs(
        keras.ops.convert_to_numpy(loaded(x)) - keras.ops.convert_to_numpy(pruned(x)))))
    results["reload_sparsity"] = [layer.mask_sparsity()
                                  for layer in tfscalpel.pruned_layers(loaded)]

    # strip
    stripped = tfscalpel.strip(pruned)
    results["stripped_layers"] = [type(layer).__name__ for layer in stripped.layers]
    results["strip_max_diff"] = float(np.max(np.abs(
        keras.ops.convert_to_numpy(stripped(x)) - keras.ops.convert_to_numpy(pruned(x)))))

    # saliency through jax.grad / jax.jacrev / jax.jvp; the test recomputes it with TensorFlow.
    calibrated = tfscalpel.prune(dense, sparsity=0.5, pattern="unstructured",
                                 importance="obd")
    calibrated.save(os.path.join(out_dir, "calibrated.keras"))
    arrays = {}
    for hessian in ("fisher", "hutchinson"):
        stats = tfscalpel.calibrate(calibrated, (x, y), loss, hessian=hessian, batch_size=32,
                                    probes=2, seed=0)
        for name, s in stats.items():
            arrays[f"{hessian}/{name}/grad_abs"] = s.grad_abs
            arrays[f"{hessian}/{name}/hessian_diag"] = s.hessian_diag
    np.savez(os.path.join(out_dir, "stats.npz"), **arrays)
    tfscalpel.update_pruning(calibrated)  # OBD scores from the JAX statistics
    results["obd_sparsity"] = [layer.mask_sparsity()
                               for layer in tfscalpel.pruned_layers(calibrated)]

    # MaskLayer + GateTraining: nodes 0..7 start just above the band and die under the penalty.
    gated = keras.Sequential([keras.Input((16,)),
                              keras.layers.Dense(32, activation="relu", name="fc1"),
                              tfscalpel.MaskLayer(name="gate"),
                              keras.layers.Dense(4, name="fc2")])
    gate = gated.get_layer("gate")
    gate.set_gates(np.r_[np.full(8, 0.56), np.ones(24)])
    gated.compile(keras.optimizers.SGD(0.01), loss)
    gated.fit(x, y, epochs=2, batch_size=16, verbose=0,
              callbacks=[tfscalpel.GateTraining(penalties=(0.025,), finetune_epochs=1)])
    results["gates_kept"] = gate.kept().tolist()
    results["gate_frozen"] = float(keras.ops.convert_to_numpy(gate.frozen))
    slim, report = tfscalpel.strip(gated, return_report=True)
    results["slim_fc1_units"] = slim.get_layer("fc1").units
    results["slim_max_diff"] = float(np.max(np.abs(
        keras.ops.convert_to_numpy(slim(x)) - keras.ops.convert_to_numpy(gated(x)))))

    # Export needs TensorFlow's Keras backend and says how to get there.
    try:
        tflite_export.convert_keras(stripped)
        results["export_error"] = None
    except RuntimeError as e:
        results["export_error"] = str(e)

    with open(os.path.join(out_dir, "results.json"), "w") as f:
        json.dump(results, f)


if __name__ == "__main__":
    main(sys.argv[1])
