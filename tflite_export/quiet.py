"""Keep native libraries' chatter off the user's terminal while passing their errors through.

TensorFlow's converter and libLiteRt.so log from C++ straight to file descriptor 2 (INFO lines
on every conversion and model load; `TF_CPP_MIN_LOG_LEVEL` does not reach all of them), so the
only way to filter is at the descriptor: capture it, then write back the lines that matter.
"""
from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from typing import Callable


@contextlib.contextmanager
def filtered_stderr(drop: Callable[[bytes], bool]):
    """Run the body with fd 2 captured; afterwards write back every line ``drop`` rejects."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as capture:
        os.dup2(capture.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            capture.seek(0)
            kept = [line for line in capture.read().splitlines(keepends=True) if not drop(line)]
            if kept:
                os.write(2, b"".join(kept))


def litert_noise(line: bytes) -> bool:
    """libLiteRt's INFO lines and its warnings that the optional NPU / GPU accelerators are
    absent (the runtime is CPU-only by design)."""
    return line.startswith(b"INFO: ") or b"accelerator could not be loaded and registered" in line


def converter_noise(line: bytes) -> bool:
    """The TF converter's absl INFO / WARNING lines (I0000..., W0000...) and its summary line;
    errors (E...) and anything else pass."""
    return line[:1] in (b"I", b"W") and line[1:5].isdigit() or line.startswith(b"fully_quantize:")
