"""The C sources of the kernel library, by role: one rule for setup.py, the sanitizer and fuzz
tests and the Cortex-M firmware, so that a new kernel file (a new instruction set) is picked up
everywhere without editing a list.

* core: the runtime-neutral C99 cores (validation, packing, dispatch, every kernel of every
  instruction set; the files of another architecture compile to nothing). What a TFLite Micro
  or bare-metal build compiles.
* LiteRT: the host runtime's adapter plumbing (needs LiteRT's C API and a clock).

Kept free of imports beyond the standard library: setup.py runs it by path.
"""
from __future__ import annotations

import glob
import os

KERNELS_DIR = os.path.dirname(os.path.abspath(__file__))
_LITERT = ("tfs_litert_common.c", "tfs_litert_adapter.c", "tfs_nm_litert_adapter.c",
           "tfs_gsconv_litert_adapter.c")


def core_sources() -> list[str]:
    """File names (relative to this directory) of the runtime-neutral cores, sorted."""
    return sorted(os.path.basename(p) for p in glob.glob(os.path.join(KERNELS_DIR, "*.c"))
                  if os.path.basename(p) not in _LITERT)


def library_sources() -> list[str]:
    """File names of the host shared library _tfs_kernels: the cores plus the LiteRT adapters."""
    return core_sources() + list(_LITERT)
