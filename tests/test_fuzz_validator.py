"""Fuzzing the format validator (and every kernel path on what it accepts) and the LiteRT adapter
plumbing of both FC custom ops, and the conv op's validator and kernels (tests/c/fuzz_gsconv.c), with libFuzzer under AddressSanitizer + UndefinedBehaviorSanitizer,
for a bounded time. Needs clang with the compiler-rt fuzzer runtime (Debian: clang,
libclang-rt-14-dev; scripts/setup.sh installs them)."""
import os
import struct

import numpy as np

import custom_op_testlib as tl
import sanitized_c
from tflite_export import formats, nm_export, params_blob

FUZZ_SECONDS = int(os.environ.get("TFS_FUZZ_SECONDS", "20"))
KERNEL_SOURCES = sorted(f for f in os.listdir(sanitized_c.KERNELS) if f.endswith(".c"))


def test_fuzz_validator_under_asan_ubsan(tmp_path):
    binary = sanitized_c.build("clang", "fuzz_validator.c", sanitized_c.CORE,
                               tmp_path / "fuzz_validator", fuzzer=True)
    run = sanitized_c.fuzz(binary, FUZZ_SECONDS, tmp_path)
    tail = run.stderr[-3000:]
    assert run.returncode == 0, f"the fuzzer found a crash:\n{tail}"
    assert "Done" in run.stderr, tail


def _adapter_seed(nm: bool, int8: bool, blob: np.ndarray, in_f: int, out_f: int) -> bytes:
    """tests/c/fuzz_litert_adapter.c's input: mode, batch, in, out, blob first dim, blob."""
    mode = int(nm) | int(int8) << 1
    return struct.pack("<BBHBH", mode, 1, in_f - 1, out_f - 1, out_f - 1) + blob.tobytes()


def _adapter_seeds():
    rng = np.random.default_rng(0)
    in_f, out_f = 45, 12
    w = tl.random_group_sparse(rng, out_f, in_f, 4, 0.4)
    f32_blob = params_blob.pack_params(tl.layer_arrays(w, np.zeros(out_f, np.float32), 4), out_f)
    seeds = [_adapter_seed(False, False, f32_blob, in_f, out_f)]
    params = dict(in_zp=3, out_zp=-5, act_min=-128, act_max=127, multiplier=np.full(out_f, 1 << 30),
                  shift=np.zeros(out_f), scale=np.full(out_f, 0.01, np.float32))
    wq = np.clip(np.round(w * 40), -127, 127).astype(np.int8)
    int8_blob = params_blob.pack_params(tl.layer_arrays(wq, np.zeros(out_f, np.int32), 8, int8=params), out_f)
    seeds.append(_adapter_seed(False, True, int8_blob, in_f, out_f))
    # Fused chains (FORMAT.md "Fused chains"): in_f -> out_f -> out_f, float32 and int8.
    w2 = tl.random_group_sparse(rng, out_f, out_f, 4, 0.5)
    second = params_blob.pack_params(tl.layer_arrays(w2, np.ones(out_f, np.float32), 4), out_f)
    seeds.append(_adapter_seed(False, False, params_blob.pack_chain([f32_blob, second], out_f),
                               in_f, out_f))
    params2 = dict(params, in_zp=-5)
    second_q = params_blob.pack_params(tl.layer_arrays(np.clip(np.round(w2 * 40), -127, 127).astype(
        np.int8), np.zeros(out_f, np.int32), 4, int8=params2), out_f)
    seeds.append(_adapter_seed(False, True, params_blob.pack_chain([int8_blob, second_q], out_f),
                               in_f, out_f))
    in_nm = 48
    w24 = np.zeros((out_f, in_nm), np.float32)
    w24[:, ::2] = rng.standard_normal((out_f, in_nm // 2))
    values, indices = nm_export.encode_2_4(w24)
    meta = np.zeros(16, np.int32)
    nm = formats.get("2:4")
    meta[:7] = [nm.format_version, in_nm, out_f, 2, 4, 0, 0]
    arrays = dict(zip(nm.sections, [values.reshape(-1), indices.reshape(-1), meta,
                                    np.zeros(out_f, np.float32)]))
    seeds.append(_adapter_seed(True, False, params_blob.pack_params(arrays, out_f, nm.sections),
                               in_nm, out_f))
    return seeds


def test_fuzz_litert_adapter_under_asan_ubsan(tmp_path):
    binary = sanitized_c.build("clang", "fuzz_litert_adapter.c", KERNEL_SOURCES,
                               tmp_path / "fuzz_litert_adapter", fuzzer=True)
    run = sanitized_c.fuzz(binary, FUZZ_SECONDS, tmp_path, seeds=_adapter_seeds())
    tail = run.stderr[-3000:]
    assert run.returncode == 0, f"the fuzzer found a crash:\n{tail}"
    assert "Done" in run.stderr, tail


def test_fuzz_conv_validator_and_kernels_under_asan_ubsan(tmp_path):
    """TFS_GROUP_SPARSE_CONV2D: geometry, group-CSR and blob bytes from the fuzzer; every
    accepted layer runs on every path and must equal a direct convolution."""
    binary = sanitized_c.build("clang", "fuzz_gsconv.c", sanitized_c.CORE,
                               tmp_path / "fuzz_gsconv", fuzzer=True)
    run = sanitized_c.fuzz(binary, FUZZ_SECONDS, tmp_path)
    tail = run.stderr[-3000:]
    assert run.returncode == 0, f"the fuzzer found a crash or a wrong result:\n{tail}"
    assert "Done" in run.stderr, tail
