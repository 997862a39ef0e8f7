"""Dense vs 2:4 latency of dense layers on an NVIDIA GPU (sparse tensor cores, Ampere or later).

    python benchmarks/gpu/bench_2_4_latency.py [--quick] [--model out/nm/lenet_2_4.keras]

For every layer (LeNet-300-100's and the ConvNet's dense layers, or a given .keras model's, plus
large square layers where the issue's >= 1.3x target applies) and batch size, the same 2:4 fp16
weights are multiplied two ways with torch on the GPU, timed with CUDA events (median of runs):

  dense  - torch.mm on the dense tensor (cuBLAS, dense tensor cores)
  2:4    - torch.sparse.to_sparse_semi_structured (CUTLASS / cuSPARSELt sparse tensor cores)

Shapes are zero-padded to the multiples the semi-structured kernels require (rows and columns of
64); the padding is in both timings. Without an NVIDIA GPU (or without torch with CUDA) it prints
"skipped: no GPU" and exits 0. TensorRT engines: see build_trt_engine.py.
"""
from __future__ import annotations

import argparse
import shutil
import subprocess
import sys

LAYERS = [("lenet fc1", 784, 300), ("lenet fc2", 300, 100), ("lenet fc3", 100, 10),
          ("convnet fc1", 1024, 10), ("large", 4096, 4096), ("large", 8192, 8192),
          ("large", 4096, 16384)]
BATCHES = [1, 64, 2048]


def _gpu_present() -> bool:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return False
    return subprocess.run([smi, "-L"], capture_output=True).returncode == 0


def _torch_cuda():
    try:
        import torch
    except ImportError:
        return None
    return torch if torch.cuda.is_available() else None


def _pad(n, m=64):
    return -(-n // m) * m


def _two_four(torch, out_f, in_f, gen):
    w = torch.randn(out_f, in_f, generator=gen)
    win = w.abs().reshape(out_f, in_f // 4, 4)
    keep = torch.zeros_like(win, dtype=torch.bool)
    keep.scatter_(2, win.topk(2, dim=2).indices, True)
    return (w * keep.reshape(out_f, in_f)).half()


def _time(torch, fn, reps):
    for _ in range(5):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(reps):
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        times.append(a.elapsed_time(b) * 1000.0)  # us
    return sorted(times)[len(times) // 2]


def _layers_from_model(path):
    import keras

    model = keras.models.load_model(path)
    return [(layer.name, int(layer.kernel.shape[0]), int(layer.kernel.shape[1]))
            for layer in model.layers if isinstance(layer, keras.layers.Dense)]


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true")
    p.add_argument("--model", default=None, help="a .keras model whose Dense layers to time")
    args = p.parse_args(argv)
    torch = _torch_cuda()
    if torch is None:
        print("skipped: no GPU" if not _gpu_present() else
              "skipped: no GPU usable from torch (install torch with CUDA to run this benchmark)")
        return 0
    from torch.sparse import to_sparse_semi_structured

    layers = _layers_from_model(args.model) if args.model else LAYERS
    batches = [64] if args.quick else BATCHES
    reps = 20 if args.quick else 200
    gen = torch.Generator().manual_seed(0)
    print(f"GPU: {torch.cuda.get_device_name()}, torch {torch.__version__}, fp16, median of {reps} runs (us)")
    head = f"{'layer':<14}{'in x out':>13}{'batch':>7}{'dense us':>10}{'2:4 us':>9}{'speedup':>9}"
    print(head)
    print("-" * len(head))
    for name, in_f, out_f in layers:
        rows, cols = _pad(out_f), _pad(in_f)
        w = torch.zeros(rows, cols, dtype=torch.half)
        w[:out_f, : in_f - in_f % 4] = _two_four(torch, out_f, in_f - in_f % 4, gen)
        w = w.cuda()
        ws = to_sparse_semi_structured(w)
        for batch in batches:
            x = torch.randn(cols, _pad(batch, 64), dtype=torch.half, device="cuda")  # W @ X^T form
            dense = _time(torch, lambda: torch.mm(w, x), reps)
            sparse = _time(torch, lambda: torch.mm(ws, x), reps)
            err = (torch.mm(ws, x) - torch.mm(w, x)).abs().max().item()
            assert err < 1e-1 * max(1.0, torch.mm(w, x).abs().max().item()), f"2:4 result differs by {err}"
            print(f"{name:<14}{f'{in_f}x{out_f}':>13}{batch:>7}{dense:>10.1f}{sparse:>9.1f}{dense / sparse:>8.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
