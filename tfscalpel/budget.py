"""Prune to a budget: the user says how fast, how small or how frugal; tfscalpel picks sparsities.

    budget = tfscalpel.Budget(latency=0.3)                  # 0.3x the dense model's latency
    budget = tfscalpel.Budget(flash_bytes=64_000, arena_bytes=20_000)
    budget = tfscalpel.Budget(energy_uj=5.0, order="energy")
    print(tfscalpel.plan(model, "cortex-m4", budget=budget, sensitivity_data=(x_val, y_val)))
    pruned = tfscalpel.prune(model, target="cortex-m4", budget=budget,
                             sensitivity_data=(x_val, y_val))

**Metrics.** ``latency`` (the target profile's time unit: ns on CPUs, estimated cycles on
Cortex-M), ``flash`` (bytes the layers take in the ``.tflite`` file; with a profile from
``tflite_export.host_profile.measure_flash`` the whole file), ``arena`` (bytes of the largest
layer's working set) and ``energy`` (picojoules per inference, :mod:`tfscalpel.energy`). A relative
budget is a number in (0, 1], a fraction of the dense model's predicted figure (the dense model
is the one given, exported with the same dtype); an absolute one is given with its unit:
``latency_us`` (ns profiles), ``latency_cycles`` (cycle profiles), ``flash_bytes``,
``arena_bytes``, ``energy_uj``. Figures are predicted per layer from the target's cost profile
(:mod:`tfscalpel.layer_costs`); layers the target does not weight-prune (node-pruned, output
layers, convolutions the exporter writes dense) count at their dense cost. Ops without weights
(pooling, activations, reshapes) are not counted.

**Allocation.** Each prunable layer gets one option: a sparsity from ``sparsities`` and, where
``group_sizes`` offers several, a group width ``g``. Its cost is what the exporter will write
(a sparsity too low to beat dense by the profile's margin costs dense); its price is its
sensitivity (:mod:`tfscalpel.sensitivity`: a one-shot loss scan on held-out data, or a magnitude
proxy). The solver is a deterministic greedy over the multiple-choice knapsack (HALP, NeurIPS
2022, solves latency budgets the same way): starting dense, it repeatedly takes the move with the
least sensitivity increase per unit of the over-budget cost it removes (costs normalised by
their limits), until every metric fits; then it undoes sparsity where the budget still holds,
the largest sensitivity saving first. Ties go to the earlier layer, then the lower sparsity.
``order="energy"`` instead prunes the layers that spend the most energy first (Yang et al.,
CVPR 2017), each as far as needed before the next. ``order="uniform"`` is the baseline: one
sparsity for every prunable layer, the smallest of ``sparsities`` that fits.

**Infeasible** budgets raise :class:`BudgetError` with the best figure any allocation reaches.

**Host latency.** ``export(target="host")`` decides per layer from times measured on this
machine; plan a host latency budget with ``profile=`` a profile measured here for the model's
layers (``tflite_export.host_profile.measure``) so the allocator prices what the exporter will
measure; a registered CPU profile is a fitted line from another machine.
"""
import dataclasses

from tfscalpel import layer_costs, sensitivity
from tfscalpel.checks import is_integer, is_number
from tfscalpel.layer_costs import METRICS, ZERO, Costs, LayerShape

#: Candidate sparsities (fractions of each layer's groups removed).
DEFAULT_SPARSITIES = tuple(round(0.05 * i, 2) for i in range(20))  # 0, 0.05, ..., 0.95
ORDERS = ("sensitivity", "energy", "uniform")
_ABSOLUTE = {"latency_us": ("latency", 1e3, "ns"), "latency_cycles": ("latency", 1.0, "cycles"),
             "flash_bytes": ("flash", 1.0, None), "arena_bytes": ("arena", 1.0, None),
             "energy_uj": ("energy", 1e6, None)}
_UNITS = {"flash": "B", "arena": "B", "energy": "pJ"}


class BudgetError(ValueError):
    """The budget cannot be met on this model and target; ``best`` holds the best figures."""

    def __init__(self, message, best=None):
        super().__init__(message)
        self.best = best or {}


def _positive(value, arg):
    if not is_number(value) or not value > 0:
        raise ValueError(f"Budget: {arg} must be a number > 0, got {value!r}")
    return float(value)


class Budget:
    """What the pruned model may cost on its target (see the module docstring).

    Args:
        latency, flash, arena, energy: relative to the dense model, in (0, 1].
        latency_us, latency_cycles, flash_bytes, arena_bytes, energy_uj: absolute limits (give
            each metric at most once, relative or absolute).
        sparsities: candidate sparsities per layer (each in [0, 1); 0 is always added).
        group_sizes: candidate ``g`` per layer (default: the target's SIMD width only).
        order: ``"sensitivity"`` (knapsack, default), ``"energy"`` (energy-hungry first) or
            ``"uniform"`` (the same sparsity everywhere: the baseline).
    """

    def __init__(self, latency=None, flash=None, arena=None, energy=None, *, latency_us=None,
                 latency_cycles=None, flash_bytes=None, arena_bytes=None, energy_uj=None,
                 sparsities=DEFAULT_SPARSITIES, group_sizes=None, order="sensitivity"):
        self.relative, self.absolute = {}, {}
        for metric, value in (("latency", latency), ("flash", flash), ("arena", arena),
                              ("energy", energy)):
            if value is not None:
                value = _positive(value, metric)
                if value > 1:
                    raise ValueError(f"Budget: {metric}={value} is relative to dense and must be "
                                     f"in (0, 1]; for an absolute limit use "
                                     f"{[k for k, v in _ABSOLUTE.items() if v[0] == metric]}")
                self.relative[metric] = value
        for arg, value in (("latency_us", latency_us), ("latency_cycles", latency_cycles),
                           ("flash_bytes", flash_bytes), ("arena_bytes", arena_bytes),
                           ("energy_uj", energy_uj)):
            if value is not None:
                metric = _ABSOLUTE[arg][0]
                if metric in self.relative or metric in {_ABSOLUTE[a][0] for a in self.absolute}:
                    raise ValueError(f"Budget: {metric} is given twice; give it once, relative "
                                     f"({metric}=) or absolute ({arg}=)")
                self.absolute[arg] = _positive(value, arg)
        if not self.relative and not self.absolute:
            raise ValueError("Budget: give at least one of latency, flash, arena, energy "
                             f"(relative) or {sorted(_ABSOLUTE)} (absolute)")
        sparsities = sorted({0.0, *(float(s) for s in sparsities)})
        if any(not 0 <= s < 1 for s in sparsities):
            raise ValueError(f"Budget: sparsities must lie in [0, 1), got {sparsities}")
        self.sparsities = tuple(sparsities)
        if group_sizes is not None:
            group_sizes = tuple(group_sizes)
            if not group_sizes or any(not is_integer(g) or g < 1 for g in group_sizes):
                raise ValueError(f"Budget: group_sizes must be integers >= 1, got {group_sizes}")
        self.group_sizes = group_sizes
        if order not in ORDERS:
            raise ValueError(f"Budget: order must be one of {ORDERS}, got {order!r}")
        self.order = order

    @property
    def metrics(self):
        """The constrained metrics, in :data:`METRICS` order."""
        given = set(self.relative) | {_ABSOLUTE[a][0] for a in self.absolute}
        return tuple(m for m in METRICS if m in given)

    def limits(self, dense, time_unit):
        """``{metric: absolute limit}`` against the dense model's predicted ``Costs``."""
        out = {m: v * dense[m] for m, v in self.relative.items()}
        for arg, value in self.absolute.items():
            metric, scale, unit = _ABSOLUTE[arg]
            if unit is not None and unit != time_unit:
                other = [a for a, v in _ABSOLUTE.items() if v[0] == "latency" and v[2] == time_unit]
                raise ValueError(f"Budget: {arg} does not fit this target, whose latency is in "
                                 f"{time_unit}; use {other or ['latency= (relative)']}")
            out[metric] = value * scale
        return out

    def __repr__(self):
        parts = [f"{m}={v:g}" for m, v in self.relative.items()]
        parts += [f"{a}={v:g}" for a, v in self.absolute.items()]
        return f"Budget({', '.join(parts)}{', order=energy' if self.order == 'energy' else ''})"


@dataclasses.dataclass(frozen=True)
class LayerAllocation:
    """What one layer got."""

    name: str
    kind: str
    sparsity: float
    g: int
    format: str  # "dense", "custom g=<g>" or "custom_conv g=<g>": what the exporter is predicted to write
    costs: Costs
    dense: Costs
    sensitivity: float
    note: str  # why a layer is fixed ("" when the allocator chose)


@dataclasses.dataclass(frozen=True)
class Allocation:
    """The allocator's answer: per-layer options and predicted totals; ``print()`` it."""

    target: str
    dtype: str
    time_unit: str
    budget: Budget
    limits: dict
    layers: tuple
    totals: Costs
    dense_totals: Costs
    sensitivity_source: str
    model_latency: float = 0.0  # a measured profile's whole-model term, in every total
    model_flash: float = 0.0  # the file's bytes no layer owns (measured from the dense export)

    def sparsities(self):
        """``{layer name: sparsity}`` of the layers the budget prunes (sparsity > 0)."""
        return {r.name: r.sparsity for r in self.layers if r.sparsity > 0}

    def group_sizes(self):
        """``{layer name: g}`` of the pruned layers (``tflite_export.export(group_sizes=)``)."""
        return {r.name: r.g for r in self.layers if r.sparsity > 0}

    def __getitem__(self, name):
        for r in self.layers:
            if r.name == name:
                return r
        raise KeyError(name)

    def _unit(self, metric):
        return self.time_unit if metric == "latency" else _UNITS[metric]

    def __str__(self):
        head = (f"{'layer':<12}{'sparsity':>9}{'g':>4}  {'format':<13}{'latency':>12}"
                f"{'flash B':>11}{'arena B':>10}{'energy nJ':>11}{'sensitivity':>13}")
        lines = [f"budget {self.budget!r} on {self.target} ({self.dtype}; latency in "
                 f"{self.time_unit}, energy per inference)",
                 f"sensitivity: {self.sensitivity_source}", head, "-" * len(head)]

        def row(name, sparsity, g, fmt, c, sens, note=""):
            return (f"{name:<12}{sparsity:>9}{g:>4}  {fmt:<13}{c.latency:>12,.0f}{c.flash:>11,.0f}"
                    f"{c.arena:>10,.0f}{c.energy / 1e3:>11,.1f}{sens:>13}" + (f"  {note}" if note else ""))

        for r in self.layers:
            lines.append(row(r.name, f"{r.sparsity:.0%}", r.g or "-", r.format, r.costs,
                             f"{r.sensitivity:.4f}", r.note))
        if self.model_latency or self.model_flash:
            what = [w for w, v in (
                ("the whole model minus its layers timed alone", self.model_latency),
                ("the dense file's bytes no layer owns", self.model_flash)) if v]
            term = Costs(self.model_latency, self.model_flash, 0.0, 0.0)
            lines.append(row("(model)", "", "", "", term, "", "measured: " + "; ".join(what)))
        lines.append("-" * len(head))
        lines.append(row("total", "", "", "", self.totals, ""))
        lines.append(row("dense", "", "", "", self.dense_totals, ""))
        lines.append("vs dense: " + ", ".join(
            f"{m} {self.totals[m] / self.dense_totals[m]:.3f}x" for m in METRICS
            if self.dense_totals[m]))
        lines.append("budget:   " + ", ".join(
            f"{m} <= {lim:,.0f} {self._unit(m)} ({lim / self.dense_totals[m]:.3f}x): "
            f"{self.totals[m]:,.0f} ({'met' if self.totals[m] <= lim * (1 + 1e-9) else 'MISSED'})"
            for m, lim in self.limits.items()))
        return "\n".join(lines)


def _layer_options(costs, shape, budget, g_default):
    gs = budget.group_sizes or (g_default,)
    options = [costs.option(shape, 0.0, g_default)]
    options += [costs.option(shape, s, g) for g in gs for s in budget.sparsities if s > 0]
    return options


def _over(totals, limits):
    return {m for m, lim in limits.items() if m != "arena" and totals[m] > lim * (1 + 1e-9)}


def _sum(costs_list):
    total = ZERO
    for c in costs_list:
        total = total + c
    return total


def _solve(options, deltas, fixed_total, limits, order, energy_first):
    """The greedy multiple-choice knapsack (module docstring); returns chosen option indices or
    None when no move helps any more. ``order``: the layers in visiting order; with
    ``energy_first`` only the first layer in it that can still move is moved."""
    n = len(options)
    choice = [0] * n

    def totals(ch):
        return fixed_total + _sum(options[i][ch[i]].costs for i in range(n))

    current = totals(choice)
    # A move lowers the sum of the over-budget metrics (normalised), but may raise one of them
    # while lowering another: bound the walk so two metrics can never trade places forever.
    for _ in range(4 * len(limits) * sum(len(o) for o in options) + 1):
        over = _over(current, limits)
        if not over:
            break
        best = None
        for i in order:
            cur = options[i][choice[i]].costs
            for j, opt in enumerate(options[i]):
                gain = sum((cur[m] - opt.costs[m]) / limits[m] for m in over)
                if j == choice[i] or gain <= 1e-12:
                    continue
                trial = current + Costs(*(opt.costs[m] - cur[m] if m != "arena" else 0.0
                                          for m in ("latency", "flash", "arena", "energy")))
                if any(trial[m] > limits[m] * (1 + 1e-9) and m not in over for m in limits
                       if m != "arena"):
                    continue
                ratio = (deltas[i][j] - deltas[i][choice[i]]) / gain
                key = (ratio, -gain, i, j)
                if best is None or key < best[0]:
                    best = (key, i, j)
            if best is not None and energy_first:
                break  # energy order: the first layer (most energy) that can still move
        if best is None:
            return None
        choice[best[1]] = best[2]
        current = totals(choice)
    else:
        return None
    # Give back sensitivity where the budget still holds: the largest saving first.
    while True:
        best = None
        for i in range(n):
            for j, opt in enumerate(options[i]):
                saving = deltas[i][choice[i]] - deltas[i][j]
                if saving <= 1e-15:
                    continue
                trial = list(choice)
                trial[i] = j
                if _over(totals(trial), limits):
                    continue
                key = (-saving, i, j)
                if best is None or key < best[0]:
                    best = (key, i, j)
        if best is None:
            return choice
        choice[best[1]] = best[2]


def _uniform(options, fixed_total, limits, sparsities):
    """The smallest sparsity that, in every prunable layer (at its first g), fits; or None."""
    for s in sparsities:
        choice = [next((j for j, o in enumerate(opts) if o.sparsity == s), None)
                  for opts in options]
        if None in choice:
            continue  # an arena limit ruled this sparsity out for some layer
        if not _over(fixed_total + _sum(o[c].costs for o, c in zip(options, choice)), limits):
            return choice
    return None


def allocate(model, layer_plans, target, budget, profile=None, dtype=None,
             sensitivity_data=None, loss=None):
    """Choose a sparsity (and g) per layer so the predicted costs fit ``budget``.

    Args:
        model: the dense Functional / Sequential model (weights are read, and restored after
            the sensitivity scan).
        layer_plans: the planner's :class:`~tfscalpel.LayerPlan` rows; layers with method
            ``"group"`` are allocated, the others count at their dense cost.
        target: a :class:`~tfscalpel.HardwareTarget`.
        budget: a :class:`Budget`.
        profile: a cost profile (dict or JSON path) to price with instead of the target's
            (e.g. measured on this host for the model's layers by
            ``tflite_export.host_profile.measure``, or fitted on the device by
            ``python -m tflite_export.calibrate``).
        dtype: the deployment dtype (default the target's).
        sensitivity_data, loss: held-out ``(x, y)`` and loss for the one-shot scan; without
            data the magnitude proxy is used.

    Returns an :class:`Allocation`. Raises :class:`BudgetError` when no allocation fits.
    """
    if not isinstance(budget, Budget):
        raise ValueError(f"budget must be a tfscalpel.Budget, got {type(budget).__name__}")
    costs = layer_costs.ProfileCosts(target, profile, dtype)
    shapes, free, fixed = {}, [], []
    for p in layer_plans:
        layer = model.get_layer(p.name)
        shape = LayerShape.of(layer, p.layer_type, p.fan_in)
        shapes[p.name] = shape
        why = ("" if p.method == "group" else f"fixed: method {p.method} ({p.reason})")
        why = why or (f"fixed: {costs.sparse_reason(shape)}" if costs.sparse_reason(shape) else "")
        (fixed if why else free).append((p, why))
    g_default = {p.name: p.group_size for p, _ in free}
    options = [_layer_options(costs, shapes[p.name], budget, g_default[p.name]) for p, _ in free]
    # A measured profile's whole-model term (tflite_export.host_profile) counts once, dense or
    # pruned; fitted profiles have none.
    model_term = Costs(costs.model_ns, costs.model_bytes, 0.0, 0.0)
    dense_all = model_term + _sum(costs.dense(s) for s in shapes.values())
    fixed_total = model_term + _sum(costs.dense(shapes[p.name]) for p, _ in fixed)
    limits = budget.limits(dense_all, costs.time_unit)
    # Arena is a maximum, not a sum: options over the limit are out, whatever else they save.
    if "arena" in limits:
        smallest = max([fixed_total.arena] + [min(o.costs.arena for o in opts) for opts in options])
        options = [[o for o in opts if o.costs.arena <= limits["arena"]] for opts in options]
        too_big = [p.name for p, _ in fixed if costs.dense(shapes[p.name]).arena > limits["arena"]]
        too_big += [p.name for (p, _), opts in zip(free, options) if not opts]
        if too_big:
            raise BudgetError(
                f"budget arena <= {limits['arena']:,.0f} B cannot be met on {target.name}: "
                f"layers {too_big} need more on their own; the smallest arena any allocation "
                f"reaches is {smallest:,.0f} B ({smallest / dense_all.arena:.3f}x dense); weight "
                "pruning does not shrink activations (node pruning does)", {"arena": smallest})
    # The best each metric can reach alone: if one cannot, say so before searching.
    for metric in budget.metrics:
        if metric == "arena":
            continue
        best = fixed_total[metric] + sum(min(o.costs[metric] for o in opts) for opts in options)
        if best > limits[metric] * (1 + 1e-9):
            raise BudgetError(_infeasible(target, metric, limits, best, dense_all, costs, fixed),
                              {metric: best})
    if free:
        deltas, source = sensitivity.scan(
            model, {p.name: [(o.sparsity, o.g) for o in opts] for (p, _), opts in
                    zip(free, options)}, sensitivity_data, loss)
        deltas = [deltas[p.name] for p, _ in free]
    else:
        deltas, source = [], "none (no prunable layer)"
    order = list(range(len(free)))
    energy_first = budget.order == "energy"
    if energy_first:
        order.sort(key=lambda i: (-options[i][0].costs.energy, i))
    if budget.order == "uniform":
        choice = _uniform(options, fixed_total, limits, budget.sparsities)
    else:
        choice = _solve(options, deltas, fixed_total, limits, order, energy_first)
    if choice is None:
        reached = fixed_total + _sum(min(opts, key=lambda o: sum(
            o.costs[m] / limits[m] for m in limits if m != "arena")).costs for opts in options)
        raise BudgetError(
            f"budget {budget!r} cannot be met on {target.name} with all metrics together: the "
            "metrics reach their limits one at a time but not at once; the closest allocation "
            "reaches " + ", ".join(f"{m} {reached[m] / dense_all[m]:.3f}x dense"
                                   for m in budget.metrics), {m: reached[m] for m in limits})
    rows = []
    picked = {p.name: (opts[c], d[c]) for (p, _), opts, d, c in zip(free, options, deltas, choice)}
    for p in layer_plans:
        dense = costs.dense(shapes[p.name])
        if p.name in picked:
            opt, delta = picked[p.name]
            rows.append(LayerAllocation(p.name, p.layer_type, opt.sparsity, opt.g,
                                        opt.label, opt.costs, dense, delta, ""))
        else:
            note = dict((q.name, why) for q, why in fixed)[p.name]
            rows.append(LayerAllocation(p.name, p.layer_type, 0.0, 0, "dense", dense, dense,
                                        0.0, note))
    totals = model_term + _sum(r.costs for r in rows)
    return Allocation(target.name, costs.dtype, costs.time_unit, budget, limits, tuple(rows),
                      totals, dense_all, source, costs.model_ns, costs.model_bytes)


def _infeasible(target, metric, limits, best, dense_all, costs, fixed):
    unit = costs.time_unit if metric == "latency" else _UNITS[metric]
    lim = limits[metric]
    fixed_note = (f"; layers counted dense: {[p.name for p, _ in fixed]}" if fixed else "")
    return (f"budget {metric} <= {lim:,.0f} {unit} ({lim / dense_all[metric]:.3f}x dense) cannot "
            f"be met on {target.name}: the best any allocation reaches is {best:,.0f} {unit} "
            f"({best / dense_all[metric]:.3f}x dense), every prunable layer at its cheapest "
            f"option{fixed_note}")
