"""The format registry (tflite_export.formats): one definition per format, used by the exporter,
the validator, the C-array writer and (through litert_op_table / tflm_registration) the runtimes."""
import keras
import numpy as np
import pytest

import tflite_export
from tflite_export import converter, formats, kernels, params_blob, runtime
from tflite_export.fc_layers import FCLayer


def test_registry_lists_each_format_once_with_its_op_data():
    assert formats.names() == ("custom", "builtin_sparse", "2:4")
    ops = {fmt.name: (fmt.op_name, fmt.op_version, fmt.format_version) for fmt in formats.all_formats()}
    assert ops == {"custom": ("TFS_GROUP_SPARSE_FC", 1, 2), "builtin_sparse": (None, 8, None),
                   "2:4": ("TFS_NM_SPARSE_FC", 1, 1)}
    assert [fmt.name for fmt in formats.conv_formats()] == ["custom_conv"]
    assert [fmt.op_name for fmt in formats.custom_ops()] == ["TFS_GROUP_SPARSE_FC", "TFS_NM_SPARSE_FC",
                                                            "TFS_GROUP_SPARSE_CONV2D"]
    for fmt in formats.custom_ops():
        assert formats.by_op_name(fmt.op_name) is fmt
        assert fmt.sections == params_blob.OP_SECTIONS[fmt.op_name]
        assert runtime._CUSTOM_OPS[fmt.op_name] == fmt.litert_op_table  # registered by the runtime
        assert getattr(kernels.library(), fmt.litert_op_table)  # its adapter table exists
    assert formats.by_op_name("SOMETHING_ELSE") is None
    assert formats.get("custom").tflm_registration == "tflite::Register_TFS_GROUP_SPARSE_FC()"
    assert formats.get("2:4").tflm_registration is None
    assert formats.get("custom_conv").tflm_registration == "tflite::Register_TFS_GROUP_SPARSE_CONV2D()"
    with pytest.raises(ValueError, match=r"unknown format 'csr'; known: \['custom', 'builtin_sparse', '2:4', "
                                         r"'custom_conv'\]"):
        formats.get("csr")


def _fc(w, dtype="float32", unsupported=None):
    return FCLayer(subgraph=0, op_index=0, name="fc", input=0, weight=1, bias=-1, output=2,
                   in_features=w.shape[1], out_features=w.shape[0], dtype=dtype, activation=0,
                   weights=w, unsupported=unsupported)


def test_eligibility_is_one_rule_per_format():
    w = np.zeros((3, 8), np.float32)
    w[:, [0, 3, 5]] = 1.0
    nm = formats.get("2:4")
    assert nm.eligible(_fc(w)) is None
    w[1, 6:8] = 2.0  # window 4..7 of output 1: 3 nonzeros
    assert nm.eligible(_fc(w)) == "weights are not 2:4: output 1, window at input 4 has 3 nonzeros"
    assert nm.eligible(_fc(np.zeros((2, 6), np.float32))) == "in = 6 is not a multiple of 4"
    assert nm.eligible(_fc(w, unsupported="fused activation tanh")) == "fused activation tanh"
    assert formats.get("custom").eligible(_fc(w)) is None
    assert formats.get("builtin_sparse").width_reason(_fc(np.zeros((2, 6), np.float32)), 4) == \
        "in=6 is not a multiple of the builtin block 4"

    class OnlyGroups:  # a target that runs one format (tfscalpel.HardwareTarget's export data)
        name, export_formats = "mcu", ("custom",)

    assert nm.eligible(_fc(np.zeros((2, 8), np.float32)), OnlyGroups()) == \
        "target mcu does not run 2:4 (it runs ['custom'])"


@pytest.fixture(scope="module")
def two_4_model():
    keras.utils.set_random_seed(5)
    model = keras.Sequential([keras.Input((16,)), keras.layers.Dense(8, name="d")])
    k = np.asarray(model.get_layer("d").kernel).copy()
    k[1::4] = 0.0  # rows 1, 2 of every 4 inputs zero: 2:4 along the input dimension
    k[2::4] = 0.0
    model.get_layer("d").kernel.assign(k)
    return model


def test_every_custom_format_round_trips_through_the_exporter_and_the_validator(two_4_model):
    """The same 2:4 weights exported in both custom formats: the validator finds each node by
    its op name in the registry, validates it with the format's kernel and decodes it."""
    dense = converter.convert_keras(two_4_model)
    group = tflite_export.rewrite_tflite(dense, formats={"d": "custom"}, group_sizes={"d": 1},
                                         keras_model=two_4_model)
    nm = tflite_export.exporter.rewrite_nm(dense, keras_model=two_4_model)
    assert [r.format for r in group.layers] == ["custom"] and [r.format for r in nm.layers] == ["2:4"]
    assert nm.layers[0].reason == "2:4: every eligible layer (no cost model)"
    for result, op in ((group, "TFS_GROUP_SPARSE_FC"), (nm, "TFS_NM_SPARSE_FC")):
        report = tflite_export.check_nm(result.model_bytes)
        ((check),) = report.layers
        assert (check.name, check.kind, check.status, check.shape) == ("d", op, "n:m", (8, 16))
        assert check.density == pytest.approx(0.5) and report.ok


def test_kernel_group_widths_are_the_training_sides():
    """The exporter's kernel widths and the widths training caps layers by are one list."""
    from tflite_export import group_csr
    from tfscalpel.targets import GROUP_SIZES

    assert group_csr.ALLOWED_GROUP_SIZES == GROUP_SIZES


def test_the_registry_imports_without_tensorflow_or_keras():
    """The runtime reads op names and kernels from the registry: importing it stays light."""
    import os
    import subprocess
    import sys

    code = ("import sys, tflite_export.formats as f; f.custom_ops(); "
            "print(sorted(m for m in ('tensorflow', 'keras') if m in sys.modules))")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=root,
                         env=dict(os.environ, PYTHONPATH=root), timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "[]"
