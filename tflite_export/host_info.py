"""What machine this is: CPU model, the ISA features that matter to the kernels, and a fingerprint
of everything a measured cost depends on (CPU, kernel library build, LiteRT version).

Benchmarks print :func:`describe` in their header; host measurement keys its cache on
:func:`fingerprint`, so a cost measured on one CPU or kernel build is never reused on another.
"""
from __future__ import annotations

import hashlib
import os
import platform
from importlib import metadata
from typing import List

# Features our kernels or XNNPACK dispatch on, in /proc/cpuinfo's (x86) / HWCAP's (Arm) names.
_FEATURES = ("avx2", "fma", "avx512f", "avx512bw", "avx512vl", "avx512_vnni", "avx_vnni",
             "amx_int8", "asimd", "asimddp", "sve")


def _cpuinfo_lines() -> List[str]:
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            return f.read().splitlines()
    except OSError:
        return []


def _field(lines: List[str], *names: str) -> str:
    for line in lines:
        key, _, value = line.partition(":")
        if key.strip() in names:
            return value.strip()
    return ""


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    lines = _cpuinfo_lines()
    name = _field(lines, "model name", "Model name", "Hardware")
    if not name and _field(lines, "CPU implementer"):
        name = (f"Arm implementer {_field(lines, 'CPU implementer')} part "
                f"{_field(lines, 'CPU part')}")
    return name or platform.processor() or platform.machine() or "unknown CPU"


def isa_features() -> List[str]:
    """The kernel-relevant ISA features this CPU reports, in a fixed order."""
    flags = set(_field(_cpuinfo_lines(), "flags", "Features").split())
    return [f for f in _FEATURES if f in flags]


def kernel_build() -> str:
    """sha256 prefix of the compiled kernel library (a rebuilt kernel invalidates old costs)."""
    from tflite_export import kernels

    try:
        path = kernels._library_path()
    except ImportError:
        return "no-kernel-library"
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()[:16]


def _litert_version() -> str:
    try:
        return metadata.version("ai-edge-litert")
    except metadata.PackageNotFoundError:
        return "unknown"


def fingerprint() -> str:
    """One string naming everything a measured latency depends on besides the model."""
    return "|".join([platform.machine(), cpu_model(), ",".join(isa_features()),
                     f"cores={os.cpu_count()}", f"kernels={kernel_build()}",
                     f"litert={_litert_version()}"])


def registry_target() -> str | None:
    """The registered target (``tfscalpel.targets``) whose kernels this CPU runs, or None:
    ``x86-avx512`` on x86-64 with AVX-512 F/BW/VL, ``x86-avx2`` on other x86-64 with AVX2,
    ``arm-neon`` on 64-bit Arm. What a job that exports for this machine (``target="host"``)
    prunes for: the target's group widths are the ones its kernels run fastest."""
    machine = platform.machine().lower()
    features = set(isa_features())
    if machine in ("x86_64", "amd64"):
        if {"avx512f", "avx512bw", "avx512vl"} <= features:
            return "x86-avx512"
        return "x86-avx2" if "avx2" in features else None
    if machine in ("aarch64", "arm64"):
        return "arm-neon"
    return None


def describe(kernel_path: str | None = None) -> str:
    """A header line for benchmark tables: CPU model, ISA features, kernel path."""
    line = (f"CPU: {cpu_model()} ({platform.machine()}, {os.cpu_count()} logical cores); "
            f"ISA: {' '.join(isa_features()) or 'baseline only'}")
    if kernel_path is not None:
        line += f"; kernel path: {kernel_path}"
    return line
