"""Plots of a pruning run, written as PNG files (matplotlib, no display needed).

- :func:`plot_training`: accuracy (or loss) and sparsity over the epochs of ``model.fit``,
  from its ``History`` when the fit ran with :class:`tfscalpel.SparsityHistory`;
- :func:`plot_layers`: per-layer sparsity and size bars, from :func:`tfscalpel.strip`'s
  :class:`~tfscalpel.StripReport`, or from any rows given as :class:`LayerBars` (the
  exporter's report makes them with ``layer_bars()``; this module knows no export class);
- :func:`plot_latency`: latency (and file size) bars from measured rows
  ``{"model": name, "latency_us": float, "bytes": int (optional)}``, the rows the main job's
  ``export_and_measure`` returns;
- :func:`write_all`: whichever of these it is given, into one directory.

The figures are drawn on matplotlib's Agg canvas directly: no pyplot state, no GUI backend, the
global backend is left alone.

    history = pruned.fit(x, y, callbacks=[tfscalpel.UpdatePruningStep(),
                                         tfscalpel.SparsityHistory()])
    plain, strip_report = tfscalpel.strip(pruned, return_report=True)
    tfscalpel.report.write_all("out/plots", history=history, strip_report=strip_report)
"""
import dataclasses
import math
import os

from tfscalpel.checks import is_number
from tfscalpel.strip import StripReport

_DENSE_COLOR, _PRUNED_COLOR, _THIRD_COLOR = "#9e9e9e", "#1f77b4", "#ff7f0e"


def _figure(ncols, width=6.0, height=4.0):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(1, ncols, i + 1) for i in range(ncols)]
    return fig, axes


def _save(fig, path):
    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ValueError(f"plots are written as PNG: the path must end in .png, got {path!r}")
    directory = os.path.dirname(path)
    if directory:
        os.makedirs(directory, exist_ok=True)
    fig.savefig(path, dpi=110, format="png")
    return path


def _history_dict(history):
    """``History.history`` (or a plain ``{metric: [per-epoch values]}`` dict), checked."""
    logs = getattr(history, "history", history)
    if not isinstance(logs, dict):
        raise TypeError("plot_training needs a keras History (what model.fit returns) or its "
                        f".history dict, got {type(history).__name__}")
    if not logs:
        raise ValueError("the training history is empty: did model.fit run at least one epoch?")
    lengths = {key: len(values) for key, values in logs.items()}
    if len(set(lengths.values())) != 1 or not next(iter(lengths.values())):
        raise ValueError(f"every metric in the history needs one value per epoch; lengths: {lengths}")
    return logs


def plot_training(history, path, title=None):
    """Accuracy (or loss, when no accuracy was recorded) and sparsity per epoch, as PNG.

    Args:
        history: what ``model.fit`` returned (or its ``.history`` dict); the fit must have run
            with :class:`tfscalpel.SparsityHistory` so per-layer sparsity was recorded.
        path: the ``.png`` file to write (directories are created).
        title: optional figure title.

    Returns:
        ``path``.

    Raises:
        TypeError, ValueError: for anything but a non-empty history with sparsity in it.
    """
    from matplotlib.ticker import MaxNLocator

    logs = _history_dict(history)
    sparsity = sorted(k for k in logs if k.startswith("sparsity/"))
    kept = sorted(k for k in logs if k.startswith("kept/"))
    if not sparsity and not kept:
        raise ValueError(
            "the history has no sparsity: train with callbacks=[tfscalpel.SparsityHistory(), ...] "
            f"so it is recorded (metrics found: {sorted(logs)})")
    quality = [k for k in ("accuracy", "val_accuracy") if k in logs] or \
              [k for k in ("loss", "val_loss") if k in logs]
    epochs = range(1, len(next(iter(logs.values()))) + 1)
    fig, (left, right) = _figure(2)
    for key in quality:
        left.plot(epochs, [100 * v if "accuracy" in key else v for v in logs[key]],
                  marker="o", label=key)
    left.set_xlabel("epoch")
    left.set_ylabel("accuracy (%)" if "accuracy" in "".join(quality) else "loss")
    left.set_title("accuracy" if "accuracy" in "".join(quality) else "loss")
    if quality:
        left.legend()
    left.grid(alpha=0.3)
    for key in sparsity:
        right.plot(epochs, [100 * v for v in logs[key]], marker=".", label=key.split("/", 1)[1])
    if "sparsity" in logs:
        right.plot(epochs, [100 * v for v in logs["sparsity"]], color="black", linewidth=2.5,
                   label="all pruned layers")
    for key in kept:
        right.plot(epochs, [100 * (1 - v) for v in logs[key]], linestyle="--", marker=".",
                   label=f"{key.split('/', 1)[1]} (nodes removed)")
    right.set_xlabel("epoch")
    for ax in (left, right):
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    right.set_ylabel("pruned (%)")
    right.set_ylim(0, 100)
    right.set_title("sparsity per layer")
    right.legend(fontsize="small")
    right.grid(alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


@dataclasses.dataclass(frozen=True)
class LayerBars:
    """What :func:`plot_layers` draws, one entry per layer: any report can produce it.

    ``sizes`` maps a size label (e.g. ``"dense"``, ``"exported"``) to bytes per layer;
    ``nodes_removed`` (percent per layer) adds a second sparsity bar for node pruning.
    The exporter's report gives one with ``ExportReport.layer_bars()``.
    """

    title: str  # what the size panel shows, e.g. "stripped model (float32 bytes)"
    names: tuple
    sparsity: tuple  # percent of weights pruned, per layer
    sizes: dict  # {label: bytes per layer}
    notes: tuple  # a short label per layer under its name
    nodes_removed: tuple | None = None


def strip_bars(report):
    """:class:`LayerBars` of a :class:`tfscalpel.StripReport`."""
    rows = report.layers
    sizes = {"dense": [r.bytes_dense for r in rows], "CSR": [r.bytes_csr for r in rows],
             "group-CSR": [r.bytes_group_csr for r in rows]}
    notes = [r.pattern if r.nodes_total is None else f"{r.pattern}, {r.nodes_kept}/"
             f"{r.nodes_total} nodes" for r in rows]
    removed = None
    if any(r.nodes_total for r in rows):
        removed = tuple(100 * (1 - r.nodes_kept / r.nodes_total) if r.nodes_total else 0.0
                        for r in rows)
    return LayerBars("stripped model (float32 bytes)", tuple(r.name for r in rows),
                     tuple(100 * (1 - r.density) for r in rows), sizes, tuple(notes), removed)


def _layer_bars(report):
    if isinstance(report, LayerBars):
        return report
    if isinstance(report, StripReport):
        return strip_bars(report)
    if callable(getattr(report, "layer_bars", None)):
        return report.layer_bars()
    raise TypeError("plot_layers needs a tfscalpel.StripReport (strip(..., return_report=True)), "
                    "a LayerBars, or a report with a layer_bars() method (the exporter's "
                    f"ExportReport), got {type(report).__name__}")


def plot_layers(report, path, title=None):
    """Per-layer sparsity bars and size bars (dense vs the sparse formats), as PNG.

    Args:
        report: a :class:`tfscalpel.StripReport`, a :class:`LayerBars`, or any report with a
            ``layer_bars()`` method returning one (e.g. the exporter's ``ExportReport``).
        path: the ``.png`` file to write.
        title: optional figure title.

    Raises:
        TypeError: for another kind of report; ValueError: for a report without layers.
    """
    bars = _layer_bars(report)
    size_title, names, sparsity, sizes, notes = (bars.title, bars.names, bars.sparsity,
                                                 bars.sizes, bars.notes)
    if not names:
        raise ValueError("the report has no layers to plot")
    fig, (left, right) = _figure(2, width=max(5.0, 1.2 * len(names) + 2.5))
    xs = range(len(names))
    if bars.nodes_removed is not None:
        # Node pruning: what was removed is nodes; the weights left may be dense.
        removed = bars.nodes_removed
        series = [("weights pruned", sparsity, -0.2), ("nodes removed", removed, 0.2)]
        left.legend(handles=[left.bar([x + off for x in xs], vals, 0.4, label=label,
                                      color=color)
                             for (label, vals, off), color in zip(series, (_PRUNED_COLOR, _THIRD_COLOR))])
        for bars, (_, vals, _) in zip(left.containers, series):
            left.bar_label(bars, labels=[f"{v:.0f}%" for v in vals], fontsize="small")
        left.set_title("sparsity and removed nodes per layer")
    else:
        bars = left.bar(xs, sparsity, color=_PRUNED_COLOR)
        left.bar_label(bars, labels=[f"{s:.1f}%" for s in sparsity], fontsize="small")
        left.set_title("sparsity per layer")
    left.set_xticks(list(xs), [f"{n}\n({note})" for n, note in zip(names, notes)],
                    fontsize="small")
    left.set_ylim(0, 110)
    left.set_ylabel("pruned (%)")
    left.grid(axis="y", alpha=0.3)
    width = 0.8 / len(sizes)
    colors = (_DENSE_COLOR, _PRUNED_COLOR, _THIRD_COLOR)
    for i, (label, values) in enumerate(sizes.items()):
        offset = (i - (len(sizes) - 1) / 2) * width
        right.bar([x + offset for x in xs], [v / 1024 for v in values], width, label=label,
                  color=colors[i % len(colors)])
    right.set_xticks(list(xs), names, fontsize="small")
    right.set_ylabel("KiB")
    right.set_title(f"size per layer: {size_title}")
    right.legend()
    right.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title)
    return _save(fig, path)


def _check_rows(rows):
    if isinstance(rows, (str, bytes, dict)) or not hasattr(rows, "__iter__"):
        raise TypeError("plot_latency needs a list of row dicts {'model': name, 'latency_us': "
                        f"number, 'bytes': number (optional)}}, got {type(rows).__name__}")
    rows = list(rows)
    if not rows:
        raise ValueError("plot_latency needs at least one measured row")
    for i, row in enumerate(rows):
        if not isinstance(row, dict) or not isinstance(row.get("model"), str):
            raise ValueError(f"row {i} must be a dict with a 'model' name, got {row!r}")
        for key in ("latency_us", "bytes"):
            if key not in row and key == "bytes":
                continue
            value = row.get(key)
            if not is_number(value) or not math.isfinite(value) or value < 0:
                raise ValueError(f"row {i} ({row['model']!r}): {key!r} must be a finite number "
                                 f">= 0, got {value!r}")
    return rows


def plot_latency(rows, path, title="measured latency and file size"):
    """Latency bars (and file size bars when every row has ``bytes``), as PNG.

    Args:
        rows: ``[{"model": name, "latency_us": float, "bytes": int (optional), ...}]``, e.g.
            the main job's measured rows. Rows whose name starts with ``"dense"`` are grey.
        path: the ``.png`` file to write.
        title: figure title.

    Raises:
        TypeError, ValueError: for rows that are not such dicts or hold no finite numbers.
    """
    rows = _check_rows(rows)
    with_bytes = all("bytes" in row for row in rows)
    fig, axes = _figure(2 if with_bytes else 1, width=max(5.0, 1.1 * len(rows) + 2.0))
    names = [row["model"] for row in rows]
    colors = [_DENSE_COLOR if n.lower().startswith("dense") else _PRUNED_COLOR for n in names]
    panels = [("latency_us", "latency (us)", lambda v: f"{v:.1f}")]
    if with_bytes:
        panels.append(("bytes", "file size (KiB)", lambda v: f"{v:.0f}"))
    for ax, (key, label, fmt) in zip(axes, panels):
        values = [row[key] / (1024 if key == "bytes" else 1) for row in rows]
        bars = ax.bar(range(len(rows)), values, color=colors)
        ax.bar_label(bars, labels=[fmt(v) for v in values], fontsize="small")
        ax.set_xticks(range(len(rows)), names, rotation=20, ha="right", fontsize="small")
        ax.set_ylabel(label)
        ax.set_title(label)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    return _save(fig, path)


def write_all(directory, history=None, strip_report=None, export_reports=(), latency_rows=None,
              prefix=""):
    """Write every plot the arguments allow into ``directory``; returns ``{kind: path}``.

    Files: ``{prefix}training.png`` (history), ``{prefix}layers.png`` (strip report),
    ``{prefix}layers_<quantize>.png`` per export report, ``{prefix}latency.png`` (rows).

    Raises:
        ValueError: when nothing to plot is given (and whatever the single plots raise).
    """
    if isinstance(export_reports, (list, tuple)):
        export_reports = tuple(export_reports)
    else:
        export_reports = (export_reports,)
    if history is None and strip_report is None and not export_reports and latency_rows is None:
        raise ValueError("write_all: give at least one of history, strip_report, export_reports, "
                         "latency_rows")
    written = {}
    join = lambda name: os.path.join(os.fspath(directory), f"{prefix}{name}.png")  # noqa: E731
    if history is not None:
        written["training"] = plot_training(history, join("training"))
    if strip_report is not None:
        written["layers"] = plot_layers(strip_report, join("layers"))
    for report in export_reports:
        tag = getattr(report, "quantize", "export")
        written[f"layers_{tag}"] = plot_layers(report, join(f"layers_{tag}"))
    if latency_rows is not None:
        written["latency"] = plot_latency(latency_rows, join("latency"))
    return written


def _export_cell(t):
    if t.export_unsupported:
        return "refused (reason below)"
    if t.cost_profile is None:
        return f"{', '.join(t.export_formats)} on every eligible layer, no cost model"
    if t.borrowed_from:
        return f"cost profile borrowed from `{t.borrowed_from}`"
    return f"own cost profile ({t.cost_profile.get('time_unit', 'ns')})"


def targets_table():
    """The hardware-target registry as a Markdown table, then why the refused targets are
    (README's "Hardware targets" section is this output; ``python -m tfscalpel.report --targets``
    prints it)."""
    from tfscalpel.targets import get_target, known_targets

    lines = ["| target | kind | deployment dtype | SIMD group width g | dense layers | conv layers | export | description |",
             "|---|---|---|---|---|---|---|---|"]
    refused = []
    for name in known_targets():
        t = get_target(name)
        widths = ", ".join(f"{dtype} {g}" for dtype, g in sorted(t.group_width.items()))
        lines.append(f"| `{t.name}` | {t.kind} | {t.default_dtype} | {widths} | "
                     f"{t.methods['dense']} | {t.methods['conv']} | {_export_cell(t)} | {t.description} |")
        if t.export_unsupported:
            refused.append(f"- `{t.name}`: {t.export_unsupported}.")
        elif t.borrowed_from:
            refused.append(f"- `{t.name}`: {t.cost_profile.get('source', '')}.")
    return "\n".join(lines + ([""] + refused if refused else []))


if __name__ == "__main__":
    import sys

    if sys.argv[1:] != ["--targets"]:
        sys.exit("usage: python -m tfscalpel.report --targets   (prints the hardware-target table)")
    print(targets_table())
