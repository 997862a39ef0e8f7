"""Host measurement (target="host"): deterministic choices from injected timings, the cache, and
the never-slower rule. Real timings are shown by benchmarks, never asserted here."""
import keras
import numpy as np
import pytest

from tflite_export import host_info, host_measure
from tflite_export.converter import convert_keras

CUSTOM = b"TFS_GROUP_SPARSE_FC"


@pytest.fixture(scope="module")
def dense_bytes_and_model():
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((64,)), keras.layers.Dense(32, name="fc1"),
                              keras.layers.Dense(10, name="fc2")])
    kernel = model.get_layer("fc1").kernel.numpy()
    rng = np.random.default_rng(0)
    keep = rng.random((16, 32)) < 0.1  # 90 % of the groups of 4 inputs are zero
    model.get_layer("fc1").kernel.assign(kernel * np.repeat(keep, 4, axis=0))
    return convert_keras(model), model


def _by_size(model_bytes):
    """A synthetic host on which time is proportional to the model's size."""
    return len(model_bytes) * 1e-9


def test_fastest_candidate_per_layer_is_chosen_deterministically(dense_bytes_and_model, tmp_path):
    dense, model = dense_bytes_and_model
    choice = host_measure.choose_formats(dense, model, timer=_by_size, cache_dir=str(tmp_path),
                                         progress=False)
    # fc1 is 90 % group-sparse: the smallest encoding wins; fc2 is dense: every sparse format
    # is larger than its dense weights, so it stays dense.
    fc1 = choice.layer_seconds("fc1")
    best = min((s, label) for label, s in fc1.items())[1]
    assert best.startswith("custom") or best == "builtin_sparse"
    assert choice.formats["fc1"] == ("custom" if best.startswith("custom") else best)
    assert choice.formats["fc2"] == "dense"
    assert set(fc1) >= {"dense", "custom g=1", "custom g=4", "builtin_sparse"}
    assert choice.chosen_seconds < choice.dense_seconds and not choice.note
    assert choice.fingerprint == host_info.fingerprint() and not choice.from_cache


def test_second_export_reuses_the_cache_and_a_new_host_measures_again(dense_bytes_and_model,
                                                                      tmp_path, monkeypatch):
    dense, model = dense_bytes_and_model
    first = host_measure.choose_formats(dense, model, timer=_by_size, cache_dir=str(tmp_path),
                                        progress=False)

    def must_not_time(_):
        raise AssertionError("a cached choice must not be measured again")

    again = host_measure.choose_formats(dense, model, timer=must_not_time,
                                        cache_dir=str(tmp_path), progress=False)
    assert again.from_cache and again.formats == first.formats
    assert again.measurements == first.measurements

    calls = []
    monkeypatch.setattr(host_info, "fingerprint", lambda: "another CPU|kernels=other")
    other = host_measure.choose_formats(dense, model, timer=lambda b: calls.append(b) or 1e-6,
                                        cache_dir=str(tmp_path), progress=False)
    assert calls and not other.from_cache and other.fingerprint == "another CPU|kernels=other"


def test_sparse_is_kept_only_when_it_beats_the_margin(dense_bytes_and_model, tmp_path):
    dense, model = dense_bytes_and_model
    choice = host_measure.choose_formats(dense, model, timer=_by_size, margin=100.0,
                                         use_cache=False, progress=False)
    assert choice.formats == {"fc1": "dense", "fc2": "dense"} and not choice.group_sizes


def test_never_slower_than_dense_in_the_final_rounds(dense_bytes_and_model):
    """Per-layer timings favour the custom op, the final interleaved rounds do not (as when a
    layer's gain is lost in the partition split): the export goes back to dense and says so."""
    dense, model = dense_bytes_and_model
    state = {"final": False}

    def timer(model_bytes):
        if state["final"]:
            return 2e-6 if CUSTOM in model_bytes else 1e-6
        return 1e-6 if CUSTOM in model_bytes else 2e-6

    original = host_measure._interleaved_best

    def final_rounds(t, models, rounds):
        state["final"] = True
        return original(t, models, rounds)

    host_measure._interleaved_best, saved = final_rounds, original
    try:
        choice = host_measure.choose_formats(dense, model, timer=timer, use_cache=False,
                                             progress=False)
    finally:
        host_measure._interleaved_best = saved
    assert choice.formats == {"fc1": "dense", "fc2": "dense"}
    assert "every layer kept dense" in choice.note and choice.chosen_seconds == choice.dense_seconds


def test_bad_margin_is_refused(dense_bytes_and_model):
    with pytest.raises(ValueError, match="margin must be a number >= 1.0"):
        host_measure.choose_formats(dense_bytes_and_model[0], margin=0.5, use_cache=False)


def test_real_timer_measures_a_model(dense_bytes_and_model):
    seconds = host_measure.time_model(dense_bytes_and_model[0], target_seconds=0.005, repeats=2)
    assert 0 < seconds < 0.01


def test_host_description_names_cpu_and_features():
    line = host_info.describe("avx2")
    assert line.startswith("CPU: ") and "ISA: " in line and line.endswith("kernel path: avx2")
    assert host_info.cpu_model() in line
    assert "kernels=" in host_info.fingerprint()
