"""Energy per inference of a layer: arithmetic and memory traffic by level, per format.

The default numbers are the 45 nm, 0.9 V table of M. Horowitz, "Computing's energy problem (and
what we can do about it)", ISSCC 2014 (the table seed 002 of this project quotes), in picojoules
per 32-bit operation or access:

=====================  =======
32-bit int ADD          0.1 pJ
32-bit float ADD        0.9 pJ
register file access    1.0 pJ
32-bit int MULT         3.1 pJ
32-bit float MULT       3.7 pJ
SRAM access (32 bit)    5.0 pJ
DRAM access (32 bit)  640.0 pJ
=====================  =======

The model (one inference, batch 1), for a layer of ``fan_in`` K, ``units`` N and ``positions``
P (output positions of a convolution run as im2col; 1 for a dense layer), doing ``macs``
multiply-accumulates (dense: ``K * N * P``; group-sparse: ``stored groups * g * P``, the zero
padding inside a stored group included, because the kernel multiplies it):

- arithmetic: one MULT and one ADD per MAC (int for int8, float for float32);
- registers: three accesses per MAC (two operands read, the accumulator written);
- SRAM: every MAC reads its input activation, every output is written once
  (``(macs + N * P) * bytes per value``, in 32-bit words);
- weight memory (DRAM, or flash on a microcontroller; the table's DRAM entry unless the target
  overrides it): the layer's stored bytes, read once per inference, in 32-bit words. For a
  sparse format these are its values *and* its index overhead (group indices, row pointers),
  so the format's own size accounting prices them;
- index work (sparse formats): per stored group and position, one int ADD (the address) and one
  register access.

Energy-aware pruning (T.-J. Yang, Y.-H. Chen, V. Sze, "Designing Energy-Efficient
Convolutional Neural Networks using Energy-Aware Pruning", CVPR 2017) prunes the layers that
spend the most energy first: :class:`tfscalpel.Budget`'s ``order="energy"``.

A target overrides the table with an ``"energy"`` entry in its cost profile
(``{"dram": 100.0, ...}``, any subset of :class:`EnergyTable`'s fields, plus ``"source"``).
"""
import dataclasses
import math

from tfscalpel.checks import is_number

_SOURCE = ("45 nm, 0.9 V: M. Horowitz, 'Computing's energy problem (and what we can do about "
           "it)', ISSCC 2014")


@dataclasses.dataclass(frozen=True)
class EnergyTable:
    """Picojoules per 32-bit operation or access (defaults: the 45 nm table above)."""

    int_add: float = 0.1
    float_add: float = 0.9
    register: float = 1.0
    int_mult: float = 3.1
    float_mult: float = 3.7
    sram: float = 5.0
    dram: float = 640.0  # weight memory: DRAM, or flash on a microcontroller
    source: str = _SOURCE

    def __post_init__(self):
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name != "source" and (not is_number(value) or not 0 <= value < math.inf):
                raise ValueError(f"EnergyTable: {field.name} must be a finite number >= 0 "
                                 f"(pJ), got {value!r}")


#: Horowitz's 45 nm table, the default of every target.
HOROWITZ_45NM = EnergyTable()


def table_for(profile=None):
    """The energy table of a cost profile: its ``"energy"`` entry over the 45 nm defaults."""
    override = dict((profile or {}).get("energy") or {})
    if not override:
        return HOROWITZ_45NM
    known = {f.name for f in dataclasses.fields(EnergyTable)}
    bad = sorted(set(override) - known)
    if bad:
        raise ValueError(f"cost profile {(profile or {}).get('name', '')!r}: unknown energy keys "
                         f"{bad}; allowed: {sorted(known)}")
    override.setdefault("source", f"{_SOURCE}, overridden by the target's profile")
    return dataclasses.replace(HOROWITZ_45NM, **override)


@dataclasses.dataclass(frozen=True)
class LayerEnergy:
    """Energy of one layer per inference, in picojoules, by where it is spent."""

    arithmetic: float
    registers: float
    sram: float
    weight_memory: float
    index: float

    @property
    def total(self):
        return self.arithmetic + self.registers + self.sram + self.weight_memory + self.index


def _words(n_bytes):
    return math.ceil(n_bytes / 4)


def layer_energy(macs, units, positions, weight_bytes, dtype, table=HOROWITZ_45NM,
                 stored_groups=0):
    """Energy of one layer per inference (see the module docstring for the model).

    Args:
        macs: multiply-accumulates per inference (all positions).
        units: output values per position (N).
        positions: output positions (P; 1 for a dense layer).
        weight_bytes: bytes the layer stores (values + indices + row pointers + bias ...), as
            the format's size accounting counts them.
        dtype: "int8" or "float32" (int8 uses the int ops of the table, 1 byte per value).
        table: an :class:`EnergyTable`.
        stored_groups: stored groups of a group-sparse format (0 for dense): index work.
    """
    if dtype not in ("int8", "float32"):
        raise ValueError(f"layer_energy: dtype must be 'int8' or 'float32', got {dtype!r}")
    integer = dtype == "int8"
    value_bytes = 1 if integer else 4
    op = (table.int_mult + table.int_add) if integer else (table.float_mult + table.float_add)
    index_ops = stored_groups * positions
    return LayerEnergy(
        arithmetic=macs * op,
        registers=3 * macs * table.register,
        sram=_words((macs + units * positions) * value_bytes) * table.sram,
        weight_memory=_words(weight_bytes) * table.dram,
        index=index_ops * (table.int_add + table.register),
    )
