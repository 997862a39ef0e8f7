"""The exporter's per-layer report: what each FC became, its size, predicted speedup and why."""
from __future__ import annotations

import dataclasses
import json


@dataclasses.dataclass(frozen=True)
class LayerReport:
    """One FULLY_CONNECTED layer of the exported model."""

    layer: str  # Keras layer name when matched, else the TFLite weight tensor name
    shape: tuple[int, int]  # (in, out)
    dtype: str  # "float32" | "int8" | description of an unsupported combination
    activation: str  # fused activation: none / relu / relu6 / ...
    format: str  # "custom" | "builtin_sparse" | "dense"
    g: int  # group width (custom) or block width (builtin_sparse); 0 for dense
    density: float  # fraction of nonzero weights in the TFLite weight
    stored_units: int  # groups (custom), blocks (builtin_sparse) or weights (dense)
    bytes_dense: int  # dense weights + bias
    bytes_exported: int  # what the chosen format stores for this layer
    expected_speedup: float  # predicted batch-1 time dense / chosen
    reason: str
    #: energy per inference of the exported form, picojoules (tfscalpel.energy: MACs, memory
    #: traffic by level, the format's index overhead; the target's table, else 45 nm)
    energy_pj: float = 0.0
    energy_dense_pj: float = 0.0  # the same layer left dense

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["shape"] = list(self.shape)
        return d


@dataclasses.dataclass(frozen=True)
class ExportReport:
    """All layers, plus the target profile and model-level numbers."""

    target: str
    quantize: str  # "float32" | "int8"
    layers: tuple[LayerReport, ...]
    model_bytes: int
    dense_model_bytes: int  # the converter's unmodified output
    note: str = ""  # where the costs come from when not the target's own (borrowed profile)

    def to_dict(self) -> dict:
        return {
            "target": self.target,
            "quantize": self.quantize,
            "model_bytes": self.model_bytes,
            "dense_model_bytes": self.dense_model_bytes,
            "note": self.note,
            "layers": [layer.to_dict() for layer in self.layers],
        }

    def layer_bars(self):
        """The rows ``tfscalpel.report.plot_layers`` draws: sparsity, dense vs exported bytes."""
        from tfscalpel.report import LayerBars

        rows = self.layers
        return LayerBars(
            f"TFLite {self.quantize} for {self.target} (bytes)", tuple(r.layer for r in rows),
            tuple(100 * (1 - r.density) for r in rows),
            {"dense": [r.bytes_dense for r in rows], "exported": [r.bytes_exported for r in rows]},
            tuple(f"{r.format}" + (f", g={r.g}" if r.g else "") for r in rows))

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent)

    def table(self) -> str:
        """A fixed-width text table, one row per layer, reasons last."""
        head = ("layer", "in x out", "dtype", "act", "format", "g", "density",
                "bytes dense", "bytes out", "speedup", "energy nJ")
        rows = [
            (
                lr.layer, f"{lr.shape[0]}x{lr.shape[1]}", lr.dtype, lr.activation, lr.format,
                str(lr.g or "-"), f"{lr.density:.3f}", str(lr.bytes_dense), str(lr.bytes_exported),
                f"{lr.expected_speedup:.2f}x", f"{lr.energy_pj / 1e3:,.1f}",
            )
            for lr in self.layers
        ]
        widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]

        def line(cells):
            return "  ".join(c.ljust(w) for c, w in zip(cells, widths)).rstrip()

        out = [f"target {self.target}, {self.quantize}: {self.model_bytes} bytes "
               f"(converter's dense model {self.dense_model_bytes} bytes)"]
        out += [f"note: {self.note}"] if self.note else []
        out += [line(head),
               line("-" * w for w in widths)]
        out += [line(r) for r in rows]
        out += [f"  {lr.layer}: {lr.reason}" for lr in self.layers]
        if self.layers:
            e, d = (sum(lr.energy_pj for lr in self.layers) / 1e3,
                    sum(lr.energy_dense_pj for lr in self.layers) / 1e3)
            out.append(f"energy per inference of the FC layers: {e:,.1f} nJ (dense {d:,.1f} nJ; "
                       "tfscalpel.energy's model)")
        if not self.layers:
            out.append("(no FULLY_CONNECTED layers: the model is exported as converted)")
        return "\n".join(out)

    def __str__(self) -> str:
        return self.table()
