"""Command line of the N:M validator: ``python -m tfscalpel.check_nm FILE [--n 2] [--m 4]``.

Prints one line per FULLY_CONNECTED / CONV_2D / TFS_NM_SPARSE_FC node (or Keras Dense / Conv2D
layer of a ``.keras`` file) and exits 0 when every eligible layer is N:M, 1 when some layer is
not, 2 when the file cannot be read. The function is :func:`tfscalpel.check_nm`
(:mod:`tfscalpel.nm`); import that, not this module.
"""
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from tfscalpel.nm import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
