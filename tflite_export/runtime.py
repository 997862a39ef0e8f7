"""Host runtime for tfscalpel's `.tflite` models: LiteRT's C API (``libLiteRt.so`` from the pinned
``ai-edge-litert`` wheel) through ctypes, with tfscalpel's custom ops (``TFS_GROUP_SPARSE_FC``,
``TFS_NM_SPARSE_FC``) registered.

Public API::

    rt = load(model, num_threads=1)          # model: path (str / PathLike) or bytes
    outputs = rt.run(x0, x1, ...)            # numpy in, list of numpy arrays out, any batch size
    rt.input_details / rt.output_details     # [TensorInfo(name, shape, dtype)], shape -1 = dynamic
    rt.close()                               # or use ``with load(...) as rt:``

    stock = load_stock(model)                # the same runtime WITHOUT our op registered

Every model, from a path or from bytes, is first checked by ``tflite_export.verifier`` (LiteRT
itself trusts its input: a corrupt model could kill the process); a refused model raises
``InvalidModelError``, other failures (a model LiteRT rejects, corrupt custom-op metadata, wrong
inputs) ``LiteRtError``. Why the C API and not ``ai_edge_litert.interpreter``, and the other
LiteRT facts this module relies on: tflite_export/RUNTIME.md.

A ``Runtime`` is not thread-safe: use one per thread.
"""
from __future__ import annotations

import contextlib
import ctypes
import os
import stat
from dataclasses import dataclass
from typing import List, Sequence, Tuple, Union

import numpy as np

from tflite_export import formats, verifier
from tflite_export.quiet import filtered_stderr, litert_noise

__all__ = ["LiteRtError", "InvalidModelError", "TensorInfo", "Runtime", "load", "load_stock",
           "CUSTOM_OP_NAME", "MAX_TEST_INPUT_BYTES"]

CUSTOM_OP_NAME = formats.get("custom").op_name  # TFS_GROUP_SPARSE_FC

# Buffers handed to LiteRT must be 64-byte aligned (RUNTIME.md, "Alignment").
_ALIGN = 64

# LiteRtElementType values (they mirror TfLiteType) -> numpy dtypes.
_ELEMENT_TYPES = {
    1: np.float32, 2: np.int32, 3: np.uint8, 4: np.int64, 6: np.bool_, 7: np.int16,
    9: np.int8, 10: np.float16, 11: np.float64, 13: np.uint64, 16: np.uint32, 17: np.uint16,
}

# The custom ops `load` registers: op name -> the kernel library function that returns the op's
# table of hooks (kernels/tfs_*_litert_adapter.c); all else is the shared plumbing.
# Every custom op of the format registry: op name -> the kernel library's function returning its
# adapter table (tfs_litert_common.h). A new format registers here by being in the registry.
_CUSTOM_OPS = {fmt.op_name: fmt.litert_op_table for fmt in formats.custom_ops()}

_HW_CPU = 1
_LOCK_READ = 0


class LiteRtError(RuntimeError):
    """A LiteRT C API call or our custom-op kernel failed; the message says which and why."""


class InvalidModelError(LiteRtError, verifier.InvalidModelError):
    """The model was refused before LiteRT saw it (tflite_export.verifier's rules, the custom
    ops' rules, or a file that cannot be read); also a ``ValueError``."""


#: `load` runs the model once on zero inputs of batch 1; it refuses models whose inputs for that
#: run would need more bytes than this.
MAX_TEST_INPUT_BYTES = 256 << 20


def _read_model(model) -> bytes:
    """The model's bytes, from bytes or from a file (read whole, at most the verifier's cap)."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    path = os.fspath(model)
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise InvalidModelError(f"model path {path!r} is not a regular file")
            if st.st_size > verifier.MAX_MODEL_BYTES:
                raise InvalidModelError(f"model file {path!r} is {st.st_size} bytes; a .tflite "
                                        f"flatbuffer holds at most {verifier.MAX_MODEL_BYTES}")
            return f.read(verifier.MAX_MODEL_BYTES + 1)
    except FileNotFoundError:
        raise LiteRtError(f"model file not found: {path}") from None
    except IsADirectoryError:
        raise InvalidModelError(f"model path {path!r} is a directory, not a .tflite file") from None
    except OSError as e:
        raise LiteRtError(f"cannot read model file {path!r}: {e.strerror or e}") from None


class _Layout(ctypes.Structure):
    # unsigned rank:7; unsigned has_strides:1; int32 dimensions[8]; uint32 strides[8] (68 bytes)
    _fields_ = [
        ("rank", ctypes.c_uint32, 7),
        ("has_strides", ctypes.c_uint32, 1),
        ("dimensions", ctypes.c_int32 * 8),
        ("strides", ctypes.c_uint32 * 8),
    ]


class _RankedTensorType(ctypes.Structure):
    _fields_ = [("element_type", ctypes.c_int), ("layout", _Layout)]


assert ctypes.sizeof(_Layout) == 68 and ctypes.sizeof(_RankedTensorType) == 72


@dataclass(frozen=True)
class TensorInfo:
    """One signature input or output: its name, shape (-1 = dynamic dimension) and numpy dtype."""

    name: str
    shape: Tuple[int, ...]
    dtype: type


_vp = ctypes.c_void_p
_P = ctypes.POINTER


def _find_litert_library() -> str:
    import ai_edge_litert

    path = os.path.join(os.path.dirname(ai_edge_litert.__file__), "libLiteRt.so")
    if not os.path.exists(path):
        raise LiteRtError(f"libLiteRt.so not found in the ai-edge-litert wheel at {path}")
    return path


_LIB = None
_KERNELS = None


def _litert():
    """Load libLiteRt.so once and declare the C signatures we use (all return LiteRtStatus)."""
    global _LIB
    if _LIB is not None:
        return _LIB
    lib = ctypes.CDLL(_find_litert_library(), mode=ctypes.RTLD_GLOBAL)
    sz = ctypes.c_size_t
    sigs = {
        "LiteRtCreateEnvironment": [ctypes.c_int, _vp, _P(_vp)],
        "LiteRtDestroyEnvironment": [_vp],
        "LiteRtCreateModelFromFile": [_vp, ctypes.c_char_p, _P(_vp)],
        "LiteRtCreateModelFromBuffer": [_vp, _vp, sz, _P(_vp)],
        "LiteRtDestroyModel": [_vp],
        "LiteRtCreateOptions": [_P(_vp)],
        "LiteRtDestroyOptions": [_vp],
        "LiteRtSetOptionsHardwareAccelerators": [_vp, ctypes.c_int],
        "LiteRtCreateOpaqueOptions": [ctypes.c_char_p, _vp, _vp, _P(_vp)],
        "LiteRtAddOpaqueOptions": [_vp, _vp],
        "LiteRtAddCustomOpKernelOption": [_vp, ctypes.c_char_p, ctypes.c_int, _vp, _vp],
        "LiteRtCreateCompiledModel": [_vp, _vp, _vp, _P(_vp)],
        "LiteRtDestroyCompiledModel": [_vp],
        "LiteRtGetNumModelSignatures": [_vp, _P(sz)],
        "LiteRtGetModelSignature": [_vp, sz, _P(_vp)],
        "LiteRtGetNumSignatureInputs": [_vp, _P(sz)],
        "LiteRtGetNumSignatureOutputs": [_vp, _P(sz)],
        "LiteRtGetSignatureInputName": [_vp, sz, _P(ctypes.c_char_p)],
        "LiteRtGetSignatureOutputName": [_vp, sz, _P(ctypes.c_char_p)],
        "LiteRtGetSignatureInputTensorByIndex": [_vp, sz, _P(_vp)],
        "LiteRtGetSignatureOutputTensorByIndex": [_vp, sz, _P(_vp)],
        "LiteRtGetRankedTensorType": [_vp, _P(_RankedTensorType)],
        "LiteRtCompiledModelResizeInputTensor": [_vp, sz, sz, _P(ctypes.c_int), sz],
        "LiteRtGetCompiledModelInputTensorLayout": [_vp, sz, sz, _P(_Layout)],
        "LiteRtGetCompiledModelOutputTensorLayouts": [_vp, sz, sz, _P(_Layout), ctypes.c_bool],
        "LiteRtCreateTensorBufferFromHostMemory": [_P(_RankedTensorType), _vp, sz, _vp, _P(_vp)],
        "LiteRtDestroyTensorBuffer": [_vp],
        "LiteRtRunCompiledModel": [_vp, sz, sz, _P(_vp), sz, _P(_vp)],
        "LiteRtCompiledModelGetErrorMessages": [_vp, _P(ctypes.c_char_p)],
        "LiteRtCompiledModelClearErrors": [_vp],
    }
    for name, argtypes in sigs.items():
        fn = getattr(lib, name)
        fn.argtypes = argtypes
        fn.restype = ctypes.c_int
    # LiteRtDestroy* return void in the C API; declaring them void avoids reading garbage.
    for name in ("LiteRtDestroyEnvironment", "LiteRtDestroyModel", "LiteRtDestroyOptions",
                 "LiteRtDestroyCompiledModel", "LiteRtDestroyTensorBuffer"):
        getattr(lib, name).restype = None
    _LIB = lib
    return lib


def _kernels():
    """Our compiled kernel library (built by setup.py), with the shared LiteRT adapter entry
    points declared (kernels/tfs_litert_common.h) and each custom op's table getter."""
    global _KERNELS
    if _KERNELS is None:
        from tflite_export import kernels

        k = kernels.library()
        sz = ctypes.c_size_t
        decl = {
            "tfs_litert_ctx_create": (_vp, [_vp, _vp, _vp, _vp]),
            "tfs_litert_ctx_destroy": (None, [_vp]),
            "tfs_litert_ctx_take_error": (ctypes.c_int, [_vp, ctypes.c_char_p, sz]),
            "tfs_litert_ctx_runs": (ctypes.c_longlong, [_vp]),
            "tfs_litert_kernel": (_vp, []),
        }
        decl.update({getter: (_vp, []) for getter in _CUSTOM_OPS.values()})
        for name, (res, args) in decl.items():
            fn = getattr(k, name)
            fn.restype, fn.argtypes = res, args
        _KERNELS = k
    return _KERNELS


def _check(status: int, what: str) -> None:
    if status != 0:
        raise LiteRtError(f"{what} failed with LiteRtStatus {status}")


def _aligned_empty(shape: Sequence[int], dtype) -> np.ndarray:
    """A C-contiguous array whose data starts on a 64-byte boundary (LiteRT rejects others)."""
    dtype = np.dtype(dtype)
    n = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
    nbytes = max(n * dtype.itemsize, 1)
    raw = np.empty(nbytes + _ALIGN, dtype=np.uint8)
    off = (-raw.ctypes.data) % _ALIGN
    return raw[off:off + n * dtype.itemsize].view(dtype).reshape(shape)


def _layout_shape(layout: _Layout) -> Tuple[int, ...]:
    return tuple(int(layout.dimensions[i]) for i in range(layout.rank))


def _check_custom_nodes(summary: verifier.ModelSummary, registered) -> List[str]:
    """Refuse custom-op nodes of `registered` ops that LiteRT would not resolve or that could not
    run (RUNTIME.md: version 1 only, constant inputs 64-byte aligned, no custom options); return
    a line per custom op that stays unresolved, for the error LiteRT's failure will raise."""
    unresolved = []
    for node in summary.custom_nodes:
        where = f"subgraph {node.subgraph} operator {node.index} ({node.name})"
        if node.name not in registered:
            line = f"{node.name} (version {node.version})"
            if line not in unresolved:
                unresolved.append(line)
            continue
        if node.version != 1:
            raise InvalidModelError(
                f"{where}: operator code version {node.version}; LiteRT resolves custom ops at "
                f"version 1 only, so {node.name} version {node.version} would be an unresolved "
                "custom op (re-export the model with tflite_export)")
        if node.options_bytes:
            raise InvalidModelError(
                f"{where}: {node.options_bytes} bytes of custom options; custom options must be "
                "empty (every parameter lives in the node's parameter blob, FORMAT.md)")
        for (sg, op, pos), offset in summary.constant_offsets.items():
            if (sg, op) == (node.subgraph, node.index) and offset % _ALIGN:
                raise InvalidModelError(
                    f"{where}: constant input {pos} starts at file offset {offset}, not a "
                    f"multiple of {_ALIGN}; LiteRT refuses unaligned buffers (RUNTIME.md). "
                    "Re-pack the model with tflite_export.flatbuffer.save")
    return unresolved


def _unresolved_hint(unresolved: List[str]) -> str:
    ops = ", ".join(unresolved)
    ours = ", ".join(sorted(_CUSTOM_OPS))
    return (f"unresolved custom op {ops}: this runtime has no kernel registered for it. Load "
            f"tfscalpel's ops ({ours}, version 1) with "
            "tflite_export.runtime.load() (load_stock() runs LiteRT's builtin ops only); on "
            "TensorFlow Lite Micro add e.g. resolver.AddCustom(\"TFS_GROUP_SPARSE_FC\", "
            "tflite::Register_TFS_GROUP_SPARSE_FC()) (kernels/TFLM.md)")


class Runtime:
    """One compiled model on LiteRT's CPU path (XNNPACK), optionally with our custom op.

    Args:
      model: a path to a ``.tflite`` file, or its bytes.
      num_threads: XNNPACK threads for the builtin ops (our custom op runs on the calling thread).
      custom_ops: register our custom ops; False gives the stock runtime.
    """

    def __init__(self, model: Union[str, os.PathLike, bytes, bytearray, memoryview],
                 num_threads: int = 1, custom_ops: bool = True, _max_input_bytes=None):
        if int(num_threads) < 1:
            raise ValueError(f"num_threads must be >= 1, got {num_threads}")
        self._lib = _litert()
        self._env = self._model = self._options = self._cm = None
        self._contexts = {}  # custom op name -> its adapter context (user_data)
        self._unresolved = []
        self._model_bytes = None
        self._buffers = None  # (shapes key, in arrays, out arrays, in handles, out handles)
        self._closed = False
        try:
            with filtered_stderr(litert_noise), self._explained():
                self._open(model, int(num_threads), custom_ops, _max_input_bytes)
        except BaseException:
            self.close()
            raise

    @contextlib.contextmanager
    def _explained(self):
        """LiteRT reports an unresolved custom op only as a failing status of a later call; say
        which op it was and how to resolve it."""
        try:
            yield
        except LiteRtError as e:
            if not self._unresolved or isinstance(e, InvalidModelError):
                raise
            raise LiteRtError(f"{_unresolved_hint(self._unresolved)}. LiteRT said: {e}") from None

    # ----------------------------------------------------------------------------------------
    def _open(self, model, num_threads: int, custom_ops: bool, max_input_bytes) -> None:
        data = _read_model(model)
        try:
            summary = verifier.verify(data)
        except verifier.InvalidModelError as e:
            raise InvalidModelError(str(e)) from None
        need = sum(summary.input_bytes)
        if max_input_bytes is not None and need > max_input_bytes:
            raise InvalidModelError(
                f"the model's inputs need {need} bytes at batch 1, over load()'s cap of "
                f"{max_input_bytes} for its check run (MAX_TEST_INPUT_BYTES)")
        self._unresolved = _check_custom_nodes(summary, _CUSTOM_OPS if custom_ops else {})
        lib = self._lib
        env = _vp()
        _check(lib.LiteRtCreateEnvironment(0, None, ctypes.byref(env)), "LiteRtCreateEnvironment")
        self._env = env
        # LiteRT gets the verified bytes, never the path: LiteRtCreateModelFromFile does not
        # verify (RUNTIME.md). The copy sits at a 64-byte aligned address and lives as long as
        # the model: the custom op's constant tensors point straight into it (alignment rule).
        self._model_bytes = _aligned_empty((len(data),), np.uint8)
        self._model_bytes[...] = np.frombuffer(data, dtype=np.uint8)
        handle = _vp()
        st = lib.LiteRtCreateModelFromBuffer(env, self._model_bytes.ctypes.data, len(data),
                                             ctypes.byref(handle))
        _check(st, "LiteRtCreateModelFromBuffer")
        self._model = handle

        opts = _vp()
        _check(lib.LiteRtCreateOptions(ctypes.byref(opts)), "LiteRtCreateOptions")
        self._options = opts
        _check(lib.LiteRtSetOptionsHardwareAccelerators(opts, _HW_CPU),
               "LiteRtSetOptionsHardwareAccelerators")
        # XNNPACK thread count: an opaque option whose payload is a malloc'd TOML string that
        # the options own (freed by the destructor we pass: libc free).
        libc = ctypes.CDLL(None)
        libc.malloc.restype = _vp
        libc.malloc.argtypes = [ctypes.c_size_t]
        toml = f"num_threads = {num_threads}\n".encode()
        payload = libc.malloc(len(toml) + 1)
        ctypes.memmove(payload, toml + b"\0", len(toml) + 1)
        opaque = _vp()
        free_ptr = ctypes.cast(libc.free, _vp)
        st = lib.LiteRtCreateOpaqueOptions(b"xnnpack", payload, free_ptr, ctypes.byref(opaque))
        if st != 0:
            libc.free(ctypes.c_void_p(payload))
            _check(st, "LiteRtCreateOpaqueOptions(xnnpack)")
        _check(lib.LiteRtAddOpaqueOptions(opts, opaque), "LiteRtAddOpaqueOptions")

        if custom_ops:
            for name, getter in _CUSTOM_OPS.items():
                self._register_custom_op(opts, name, getter)

        cm = _vp()
        st = lib.LiteRtCreateCompiledModel(env, self._model, opts, ctypes.byref(cm))
        _check(st, "LiteRtCreateCompiledModel")
        self._cm = cm

        nsig = ctypes.c_size_t()
        _check(lib.LiteRtGetNumModelSignatures(self._model, ctypes.byref(nsig)),
               "LiteRtGetNumModelSignatures")
        if nsig.value < 1:
            raise LiteRtError("model has no signature")
        sig = _vp()
        _check(lib.LiteRtGetModelSignature(self._model, 0, ctypes.byref(sig)),
               "LiteRtGetModelSignature")
        self.input_details = self._tensor_infos(sig, True)
        self.output_details = self._tensor_infos(sig, False)

    def _register_custom_op(self, opts, name: str, getter: str) -> None:
        """Register one custom op on the compilation options: a context for the op's table
        (returned by `getter` in the kernel library) as user_data of the shared vtable. The
        context is kept before registering, so `_release` frees it on error."""
        lib, k = self._lib, _kernels()
        accessors = [ctypes.cast(getattr(lib, n), _vp) for n in (
            "LiteRtGetTensorBufferTensorType", "LiteRtGetTensorBufferSize",
            "LiteRtGetTensorBufferHostMemory")]
        ctx = k.tfs_litert_ctx_create(getattr(k, getter)(), *accessors)
        if not ctx:
            raise LiteRtError(f"tfs_litert_ctx_create({name}) failed (out of memory)")
        self._contexts[name] = ctx
        # Version 1: LiteRT resolves custom ops at that version only (RUNTIME.md).
        _check(lib.LiteRtAddCustomOpKernelOption(opts, name.encode(), 1, k.tfs_litert_kernel(), ctx),
               f"LiteRtAddCustomOpKernelOption({name})")

    def custom_op_runs(self, name: str) -> int:
        """How many node runs custom op `name` has made in this runtime (0 if not registered);
        lets tests prove that our kernel, not a fallback, ran."""
        ctx = self._contexts.get(name)
        return int(_kernels().tfs_litert_ctx_runs(ctx)) if ctx else 0

    def _tensor_infos(self, sig, inputs: bool) -> List[TensorInfo]:
        lib = self._lib
        kind = "Input" if inputs else "Output"
        n = ctypes.c_size_t()
        _check(getattr(lib, f"LiteRtGetNumSignature{kind}s")(sig, ctypes.byref(n)),
               f"LiteRtGetNumSignature{kind}s")
        infos = []
        for i in range(n.value):
            name = ctypes.c_char_p()
            _check(getattr(lib, f"LiteRtGetSignature{kind}Name")(sig, i, ctypes.byref(name)),
                   f"LiteRtGetSignature{kind}Name")
            t = _vp()
            _check(getattr(lib, f"LiteRtGetSignature{kind}TensorByIndex")(sig, i, ctypes.byref(t)),
                   f"LiteRtGetSignature{kind}TensorByIndex")
            rtt = _RankedTensorType()
            _check(lib.LiteRtGetRankedTensorType(t, ctypes.byref(rtt)), "LiteRtGetRankedTensorType")
            if rtt.element_type not in _ELEMENT_TYPES:
                raise LiteRtError(f"unsupported element type {rtt.element_type} for {kind.lower()} {i}")
            infos.append(TensorInfo((name.value or b"").decode(errors="replace"), _layout_shape(rtt.layout),
                                    _ELEMENT_TYPES[rtt.element_type]))
        return infos

    # ----------------------------------------------------------------------------------------
    def _destroy_buffers(self) -> None:
        if self._buffers is not None:
            for h in self._buffers[3] + self._buffers[4]:
                self._lib.LiteRtDestroyTensorBuffer(h)
            self._buffers = None

    def _make_buffer(self, arr: np.ndarray, element_type: int, layout: _Layout):
        rtt = _RankedTensorType()
        rtt.element_type = element_type
        rtt.layout = layout
        h = _vp()
        st = self._lib.LiteRtCreateTensorBufferFromHostMemory(
            ctypes.byref(rtt), arr.ctypes.data, max(arr.nbytes, 1), None, ctypes.byref(h))
        _check(st, "LiteRtCreateTensorBufferFromHostMemory")
        return h

    def _prepare(self, shapes: Tuple[Tuple[int, ...], ...]) -> None:
        """Resize inputs (RUNTIME.md, "Dynamic batch"), read layouts, make buffers."""
        if self._buffers is not None and self._buffers[0] == shapes:
            return
        self._destroy_buffers()
        lib, cm = self._lib, self._cm
        n_in, n_out = len(self.input_details), len(self.output_details)
        in_layouts = []
        for i, shape in enumerate(shapes):
            lay = _Layout()
            _check(lib.LiteRtGetCompiledModelInputTensorLayout(cm, 0, i, ctypes.byref(lay)),
                   "LiteRtGetCompiledModelInputTensorLayout")
            if _layout_shape(lay) != shape:
                dims = (ctypes.c_int * len(shape))(*shape)
                st = lib.LiteRtCompiledModelResizeInputTensor(cm, 0, i, dims, len(shape))
                _check(st, f"resizing input {i} to {shape} (LiteRtCompiledModelResizeInputTensor)")
                _check(lib.LiteRtGetCompiledModelInputTensorLayout(cm, 0, i, ctypes.byref(lay)),
                       "LiteRtGetCompiledModelInputTensorLayout")
            in_layouts.append(lay)
        out_layouts = (_Layout * max(n_out, 1))()
        _check(lib.LiteRtGetCompiledModelOutputTensorLayouts(cm, 0, n_out, out_layouts, True),
               "LiteRtGetCompiledModelOutputTensorLayouts")
        for i in range(n_out):
            self._fix_dynamic_output_layout(out_layouts[i], self.output_details[i].shape, shapes)
        in_arrays = [_aligned_empty(shapes[i], self.input_details[i].dtype) for i in range(n_in)]
        out_arrays = [_aligned_empty(_layout_shape(out_layouts[i]), self.output_details[i].dtype)
                      for i in range(n_out)]
        rev = {v: k for k, v in _ELEMENT_TYPES.items()}
        in_h, out_h = [], []
        try:
            for i in range(n_in):
                in_h.append(self._make_buffer(in_arrays[i], rev[self.input_details[i].dtype],
                                              in_layouts[i]))
            for i in range(n_out):
                out_h.append(self._make_buffer(out_arrays[i], rev[self.output_details[i].dtype],
                                               out_layouts[i]))
        except BaseException:
            for h in in_h + out_h:
                lib.LiteRtDestroyTensorBuffer(h)
            raise
        self._buffers = (shapes, in_arrays, out_arrays, in_h, out_h)

    @staticmethod
    def _fix_dynamic_output_layout(layout: _Layout, signature: Tuple[int, ...],
                                   shapes: Tuple[Tuple[int, ...], ...]) -> None:
        """Make a dynamic-batch output's buffer hold the batch of the inputs.

        LiteRT reports an output's layout from shape inference before the run; where the shape is
        computed by ops at run time (a Keras Flatten becomes SHAPE -> STRIDED_SLICE -> PACK ->
        RESHAPE), that layout is stale: the previous run's batch. A buffer sized from it would be
        overrun when the batch grows, and LiteRT refuses one smaller than its stale size when the
        batch shrinks. So the buffer gets the larger of the two batches; `run` returns the rows of
        the real batch (the signature's -1 says which dimension is the batch).
        """
        if not signature or signature[0] != -1 or not shapes or not shapes[0]:
            return
        if layout.rank == len(signature):
            layout.dimensions[0] = max(layout.dimensions[0], shapes[0][0])

    def _output_rows(self, index: int, out: np.ndarray) -> np.ndarray:
        """Output ``index`` cut to the inputs' batch where its batch dimension is dynamic."""
        signature = self.output_details[index].shape
        if signature and signature[0] == -1 and self._buffers[0] and self._buffers[0][0]:
            return out[:self._buffers[0][0][0]]
        return out

    def _invoke(self) -> None:
        lib = self._lib
        _, _, _, in_h, out_h = self._buffers
        in_arr = (_vp * max(len(in_h), 1))(*in_h)
        out_arr = (_vp * max(len(out_h), 1))(*out_h)
        st = lib.LiteRtRunCompiledModel(self._cm, 0, len(in_h), in_arr, len(out_h), out_arr)
        # Our kernels' failures never show in the status (RUNTIME.md, "Ignored return codes"):
        # read their error slots first.
        if self._contexts:
            k = _kernels()
            buf = ctypes.create_string_buffer(512)
            for name, ctx in self._contexts.items():
                if k.tfs_litert_ctx_take_error(ctx, buf, len(buf)):
                    raise LiteRtError(f"{name}: {buf.value.decode(errors='replace')}")
        if st != 0:
            msg = ctypes.c_char_p()
            detail = ""
            if lib.LiteRtCompiledModelGetErrorMessages(self._cm, ctypes.byref(msg)) == 0 and msg.value:
                detail = ": " + msg.value.decode(errors="replace")
                lib.LiteRtCompiledModelClearErrors(self._cm)
            raise LiteRtError(f"LiteRtRunCompiledModel failed with LiteRtStatus {st}{detail}")

    def run(self, *arrays: np.ndarray) -> List[np.ndarray]:
        """Run the model's first signature on numpy inputs (in signature order) of any batch size.

        Inputs are cast to the model's input dtypes; returns fresh numpy arrays, one per output.
        """
        if self._closed:
            raise LiteRtError("run() on a closed Runtime")
        if len(arrays) != len(self.input_details):
            raise ValueError(f"model takes {len(self.input_details)} inputs, got {len(arrays)}")
        arrays = [np.asarray(a) for a in arrays]
        for i, (a, info) in enumerate(zip(arrays, self.input_details)):
            if a.ndim != len(info.shape) or any(
                    s != -1 and s != d for s, d in zip(info.shape[1:], a.shape[1:])):
                raise ValueError(f"input {i} ({info.name}): shape {a.shape} does not match the "
                                 f"model's {info.shape} (only the batch dimension may change)")
        with self._explained():
            self._prepare(tuple(tuple(int(d) for d in a.shape) for a in arrays))
            for dst, src, info in zip(self._buffers[1], arrays, self.input_details):
                np.copyto(dst, src.astype(info.dtype, copy=False))
            self._invoke()
        return [self._output_rows(i, o).copy() for i, o in enumerate(self._buffers[2])]

    def time_run(self, iterations: int) -> float:
        """Seconds per run of ``LiteRtRunCompiledModel`` on the buffers of the last ``run``,
        timed by a loop in C (ctypes overhead excluded). For benchmarks."""
        if self._buffers is None:
            raise LiteRtError("call run() once before time_run()")
        _, _, _, in_h, out_h = self._buffers
        in_arr = (_vp * max(len(in_h), 1))(*in_h)
        out_arr = (_vp * max(len(out_h), 1))(*out_h)
        k = _kernels()
        t = k.tfs_time_litert_run(ctypes.cast(self._lib.LiteRtRunCompiledModel, _vp), self._cm,
                                  len(in_h), in_arr, len(out_h), out_arr, int(iterations))
        if t < 0:
            raise LiteRtError("LiteRtRunCompiledModel failed inside the timing loop")
        return t

    # ----------------------------------------------------------------------------------------
    def close(self) -> None:
        """Free everything, in the order LiteRT needs (RUNTIME.md, "Lifetimes and order")."""
        if self._closed:
            return
        self._closed = True
        with filtered_stderr(litert_noise):
            self._release()

    def _release(self) -> None:
        lib = self._lib
        self._destroy_buffers()
        if self._cm:
            lib.LiteRtDestroyCompiledModel(self._cm)  # calls our Destroy once per node
        if self._options:
            lib.LiteRtDestroyOptions(self._options)
        for ctx in self._contexts.values():
            _kernels().tfs_litert_ctx_destroy(ctx)
        self._contexts = {}
        if self._model:
            lib.LiteRtDestroyModel(self._model)
        if self._env:
            lib.LiteRtDestroyEnvironment(self._env)
        self._cm = self._options = self._model = self._env = None
        self._model_bytes = None

    def __enter__(self) -> "Runtime":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self):
        # No stderr filtering here: at interpreter shutdown tempfile may already be gone.
        if getattr(self, "_closed", True):
            return
        self._closed = True
        try:
            self._release()
        except Exception:
            pass


def load(model: Union[str, os.PathLike, bytes], num_threads: int = 1) -> Runtime:
    """Load a ``.tflite`` (path or bytes) with our custom ops registered.

    The model is verified first (``InvalidModelError``, see tflite_export/verifier.py); then
    custom-op nodes are validated by a first run on zero inputs of batch 1 (inputs of at most
    ``MAX_TEST_INPUT_BYTES``), so a corrupt model is rejected here with ``LiteRtError`` rather
    than at the caller's first ``run``.
    """
    rt = Runtime(model, num_threads=num_threads, custom_ops=True,
                 _max_input_bytes=MAX_TEST_INPUT_BYTES)
    try:
        rt.run(*[np.zeros(tuple(1 if d < 0 else d for d in i.shape), i.dtype)
                 for i in rt.input_details])
    except BaseException:
        rt.close()
        raise
    return rt


def load_stock(model: Union[str, os.PathLike, bytes], num_threads: int = 1) -> Runtime:
    """Load a ``.tflite`` on the stock LiteRT runtime, without our custom op (for comparisons)."""
    return Runtime(model, num_threads=num_threads, custom_ops=False)
