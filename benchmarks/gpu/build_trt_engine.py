"""Build a TensorRT engine with 2:4 sparse weights enabled from a 2:4 Keras model, via ONNX.

    python benchmarks/gpu/build_trt_engine.py MODEL.keras [--onnx out.onnx] [--engine out.plan]
                                              [--batch 64] [--int8 | --fp16]

1. exports the model to ONNX with tf2onnx (tflite_export.onnx_export; `pip install tf2onnx onnx`),
2. where TensorRT is installed and an NVIDIA GPU is present, parses the ONNX file and builds an
   engine with BuilderFlag.SPARSE_WEIGHTS (plus FP16, or INT8 without calibration = random scales,
   for timing only), prints TensorRT's per-layer choices (which layers took sparse tactics is in
   TensorRT's verbose log: "Layers eligible for sparse math" / "TRT picked sparse implementation")
   and the median latency of the engine against one built without the sparse flag.

Exit status 0 when the engine was built, or when step 2 was skipped with its reason printed
("skipped: TensorRT is not installed" / "skipped: no GPU"); 1 when export or build failed.
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", ".."))


def _build(trt, onnx_path, batch, in_shape, sparse, precision):
    logger = trt.Logger(trt.Logger.INFO)
    builder = trt.Builder(logger)
    network = builder.create_network(0)
    parser = trt.OnnxParser(network, logger)
    with open(onnx_path, "rb") as f:
        if not parser.parse(f.read()):
            raise RuntimeError("; ".join(str(parser.get_error(i)) for i in range(parser.num_errors)))
    config = builder.create_builder_config()
    config.set_flag(trt.BuilderFlag.FP16 if precision == "fp16" else trt.BuilderFlag.INT8)
    if sparse:
        config.set_flag(trt.BuilderFlag.SPARSE_WEIGHTS)
    profile = builder.create_optimization_profile()
    name = network.get_input(0).name
    shape = (batch, *in_shape)
    profile.set_shape(name, shape, shape, shape)
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise RuntimeError("TensorRT failed to build the engine")
    return plan


def _latency_us(trt, plan, batch, in_shape, reps=200):
    import torch

    runtime = trt.Runtime(trt.Logger(trt.Logger.WARNING))
    engine = runtime.deserialize_cuda_engine(plan)
    ctx = engine.create_execution_context()
    names = [engine.get_tensor_name(i) for i in range(engine.num_io_tensors)]
    bufs = {}
    for n in names:
        if engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT:
            ctx.set_input_shape(n, (batch, *in_shape))
    for n in names:
        shape = tuple(ctx.get_tensor_shape(n))
        bufs[n] = torch.zeros(shape, dtype=torch.float32, device="cuda")
        ctx.set_tensor_address(n, bufs[n].data_ptr())
    stream = torch.cuda.Stream()
    for _ in range(10):
        ctx.execute_async_v3(stream.cuda_stream)
    stream.synchronize()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        ctx.execute_async_v3(stream.cuda_stream)
        stream.synchronize()
        times.append((time.perf_counter() - t0) * 1e6)
    return sorted(times)[reps // 2]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("model", help="a 2:4 .keras model (tfscalpel.strip of a prune_2_4 model)")
    p.add_argument("--onnx", default=None)
    p.add_argument("--engine", default=None)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--int8", action="store_true", help="INT8 instead of FP16 (no calibration: timing only)")
    args = p.parse_args(argv)
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras

    import tfscalpel
    from tflite_export.onnx_export import OnnxExportError, export_onnx

    model = keras.models.load_model(args.model)
    report = tfscalpel.check_nm(model)
    print(report)
    onnx_path = args.onnx or os.path.splitext(args.model)[0] + ".onnx"
    try:
        export_onnx(model, onnx_path)
    except OnnxExportError as e:
        print(f"ONNX export failed: {e}", file=sys.stderr)
        return 1
    print(f"ONNX written to {onnx_path}")
    try:
        import tensorrt as trt
    except ImportError:
        print("skipped: TensorRT is not installed (pip install tensorrt on a machine with an NVIDIA GPU)")
        return 0
    try:
        import torch
        if not torch.cuda.is_available():
            raise ImportError
    except ImportError:
        print("skipped: no GPU (or no torch with CUDA to drive the engine)")
        return 0
    in_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    precision = "int8" if args.int8 else "fp16"
    try:
        sparse_plan = _build(trt, onnx_path, args.batch, in_shape, True, precision)
        dense_plan = _build(trt, onnx_path, args.batch, in_shape, False, precision)
    except RuntimeError as e:
        print(f"TensorRT build failed: {e}", file=sys.stderr)
        return 1
    engine_path = args.engine or os.path.splitext(args.model)[0] + ".plan"
    with open(engine_path, "wb") as f:
        f.write(sparse_plan)
    dense_us = _latency_us(trt, dense_plan, args.batch, in_shape)
    sparse_us = _latency_us(trt, sparse_plan, args.batch, in_shape)
    print(f"TensorRT {trt.__version__} {precision} batch {args.batch}: dense {dense_us:.1f} us, "
          f"SPARSE_WEIGHTS {sparse_us:.1f} us ({dense_us / sparse_us:.2f}x); engine {engine_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
