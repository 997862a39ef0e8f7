"""The type tests behind the library's argument checks.

A number is any real number, Python's or NumPy's (``np.float32(0.5)`` and ``np.int64(4)``
come out of arrays and configs), but never a bool: ``True`` is an ``int`` to Python, and a flag
passed where a number belongs is a mistake to report, not the number 1. Each caller keeps its
own message (which argument, what range is allowed) and stores the value as a plain Python
``int`` or ``float``, so configs stay JSON-serialisable."""
import numbers


def is_number(value):
    """True for a real number (Python or NumPy, NaN and infinities included), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_integer(value):
    """True for an integer (Python or NumPy), not a bool."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
