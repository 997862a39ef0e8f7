"""Patterns and importance criteria: exact masks and scores on small hand-checked kernels."""
import numpy as np
import pytest
from keras import ops

import tfscalpel
from tfscalpel.importance import L1, L2, RMS, MaxAbs, MeanAbs


def _mask(pattern, kernel, importance, **amount):
    scores = pattern.scores(ops.convert_to_tensor(kernel), importance)
    keep = pattern.keep_blocks(scores, **amount)
    return ops.convert_to_numpy(pattern.expand(keep, kernel.shape[0]))


def test_group_mask_prunes_lowest_rms_groups_along_input_dimension():
    # Keras kernel (in=6, out=2): column 0 groups of 2 = [1,1], [5,5], [2,2]; column 1 = [3,3], [0.5,0.5], [4,4]
    k = np.array([[1, 3], [1, 3], [5, 0.5], [5, 0.5], [2, 4], [2, 4]], dtype="float32")
    mask = _mask(tfscalpel.GroupPattern(2), k, RMS(), sparsity=0.5)
    expected = np.array([[0, 1], [0, 1], [1, 0], [1, 0], [0, 1], [0, 1]], dtype="float32")  # 0.5, 1, 2 go
    np.testing.assert_array_equal(mask, expected)


def test_ragged_tail_group_is_scored_by_its_real_length():
    # in=5, g=4: groups [0:4] and the tail [4:5]. RMS of the tail is its |value|, not diluted.
    k = np.array([[1.0], [1.0], [1.0], [1.0], [1.5]], dtype="float32")
    p = tfscalpel.GroupPattern(4)
    scores = ops.convert_to_numpy(p.scores(ops.convert_to_tensor(k), RMS()))
    np.testing.assert_allclose(scores[:, 0], [1.0, 1.5])
    mask = _mask(p, k, RMS(), sparsity=0.5)
    np.testing.assert_array_equal(mask[:, 0], [0, 0, 0, 0, 1])


@pytest.mark.parametrize(
    "criterion, expected",
    [(RMS(), [np.sqrt(25 / 2), 2.0]), (MeanAbs(), [3.5, 2.0]), (MaxAbs(), [4.0, 2.0]),
     (L1(), [7.0, 2.0]), (L2(), [5.0, 2.0])],
)
def test_group_criteria_values(criterion, expected):
    k = np.array([[3.0], [-4.0], [-2.0]], dtype="float32")  # groups [3,-4] and ragged [-2]
    scores = tfscalpel.GroupPattern(2).scores(ops.convert_to_tensor(k), criterion)
    np.testing.assert_allclose(ops.convert_to_numpy(scores)[:, 0], expected, rtol=1e-6)


def test_unstructured_prunes_exact_count():
    rng = np.random.default_rng(0)
    k = rng.normal(size=(37, 11)).astype("float32")
    mask = _mask(tfscalpel.UnstructuredPattern(), k, tfscalpel.Magnitude(), sparsity=0.9)
    assert mask.sum() == 37 * 11 - round(0.9 * 37 * 11)
    assert np.abs(k[mask == 0]).max() <= np.abs(k[mask == 1]).min()


def test_two_four_keeps_two_largest_in_every_window_and_ragged_tail():
    k = np.array([[0.1], [-3], [2], [0.5], [7], [-0.2], [0.3]], dtype="float32")  # in=7: windows [0:4], [4:7]
    mask = _mask(tfscalpel.NMPattern(2, 4), k, tfscalpel.Magnitude(), sparsity=0.5)
    np.testing.assert_array_equal(mask[:, 0], [0, 1, 1, 0, 1, 0, 1])


def test_nm_tail_shorter_than_n_keeps_everything():
    k = np.array([[1.0], [2.0], [3.0], [4.0], [5.0]], dtype="float32")  # tail window of 1
    mask = _mask(tfscalpel.NMPattern(2, 4), k, tfscalpel.Magnitude(), sparsity=0.5)
    np.testing.assert_array_equal(mask[:, 0], [0, 0, 1, 1, 1])


def test_threshold_selection_removes_scores_at_or_below():
    k = np.array([[1.0, 2.0], [3.0, 0.5]], dtype="float32")
    mask = _mask(tfscalpel.UnstructuredPattern(), k, tfscalpel.Magnitude(), threshold=1.0)
    np.testing.assert_array_equal(mask, [[0, 1], [1, 0]])


@pytest.mark.parametrize("bad", [0, -1, 2.5, True])
def test_group_size_must_be_positive_integer(bad):
    with pytest.raises(ValueError, match="group_size must be an integer >= 1"):
        tfscalpel.GroupPattern(bad)


def test_nm_rejects_n_greater_than_m():
    with pytest.raises(ValueError, match="n must be <= m"):
        tfscalpel.NMPattern(3, 2)


def test_get_pattern_names():
    assert tfscalpel.get_pattern("2:4") == tfscalpel.NMPattern(2, 4)
    assert tfscalpel.get_pattern("group") == tfscalpel.GroupPattern(4)
    with pytest.raises(ValueError, match="unknown sparsity pattern 'blocky'"):
        tfscalpel.get_pattern("blocky")
    with pytest.raises(ValueError, match="unknown importance criterion"):
        tfscalpel.get_importance("taylor-ish")
