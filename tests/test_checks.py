"""NumPy scalars are numbers everywhere a number is taken; bools never are."""
import json

import numpy as np
import pytest

import tfscalpel
from tfscalpel.checks import is_integer, is_number
from tfscalpel.lottery import lottery_sparsities


def test_the_type_tests():
    assert [is_number(v) for v in (1, 0.5, np.float32(0.5), np.int8(2), True, np.bool_(True),
                                   "1", None)] == [True, True, True, True, False, False, False,
                                                   False]
    assert [is_integer(v) for v in (1, 0.5, np.float32(1), np.int64(2), True, np.bool_(True),
                                    "1")] == [True, False, False, True, False, False, False]


def test_numpy_scalars_are_accepted_and_stored_as_plain_python():
    pattern = tfscalpel.GroupPattern(np.int64(8))
    assert pattern.get_config() == {"group_size": 8}
    assert type(pattern.group_size) is int
    json.dumps(tfscalpel.NMPattern(np.int32(2), np.int32(4)).get_config())
    schedule = tfscalpel.PolynomialDecay(np.float32(0.0), np.float32(0.5), begin_step=np.int64(0),
                                         end_step=np.int64(100), frequency=np.int64(10))
    assert schedule(100) == (True, 0.5)
    training = tfscalpel.GateTraining([np.float32(1e-4)], epochs_per_stage=np.int64(2),
                                      finetune_epochs=np.int64(3))
    assert (type(training.epochs_per_stage), type(training.finetune_epochs)) == (int, int)
    assert lottery_sparsities(np.float32(0.5), np.int64(2)) == [0.5, 0.75]
    assert tfscalpel.Budget(latency=np.float32(0.5), group_sizes=[np.int64(4)]).relative == {
        "latency": 0.5}
    optimizer = tfscalpel.gate_optimizer(np.float32(1e-3), weight_decay=np.float32(0.01))
    assert optimizer.weight_decay == pytest.approx(0.01)


@pytest.mark.parametrize("build, message", [
    (lambda: tfscalpel.GroupPattern(True), "group_size must be an integer >= 1, got True"),
    (lambda: tfscalpel.GroupPattern(np.float32(4)), "group_size must be an integer"),
    (lambda: tfscalpel.Budget(latency=True), "latency must be a number > 0, got True"),
    (lambda: lottery_sparsities(0.5, np.bool_(True)), "rounds must be an integer >= 1"),
    (lambda: tfscalpel.gate_optimizer(1e-3, weight_decay=float("inf")),
     "weight_decay must be a finite number >= 0"),
])
def test_bools_and_wrong_kinds_are_refused(build, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        build()
