"""``prune(model, ...)``: turn a trained Keras model into one whose prunable layers carry masks."""
import warnings

import keras

from tfscalpel.graph import clone_with_weights
from tfscalpel.layer_handlers import get_handler, load_stock_weights
from tfscalpel.layers import PrunableMixin
from tfscalpel.patterns import GroupPattern, get_pattern, tfmot_block_pattern
from tfscalpel.planner import check_per_layer, insert_masks, plan
from tfscalpel.schedules import ConstantSparsity, get_schedule
from tfscalpel.subclassed import (
    build_like,
    copy_model,
    is_subclassed,
    prunable_layers,
)
from tfscalpel.targets import GROUP_SIZES

_SPEC_KEYS = ("pattern", "group_size", "importance", "schedule", "sparsity")


def _twin(layer):
    """The pruned class that replaces ``layer`` (its handler's), or None if it stays dense. An
    already pruned layer is pruned again as its own class, with the new pattern and schedule."""
    if isinstance(layer, PrunableMixin):
        return type(layer)
    return get_handler(layer).pruned_twin(layer)


def _stock_config(layer):
    """``layer``'s config without the pruning arguments of an already pruned layer."""
    config = layer.get_config()
    if isinstance(layer, PrunableMixin):
        for key in layer._pruning_config():
            config.pop(key)
    return config


def _resolve_spec(pattern, group_size, importance, schedule, sparsity):
    """Turn user arguments into ``(pattern, importance, schedule)``; raises ValueError."""
    if group_size is not None:
        if pattern not in ("group", None) and not isinstance(pattern, GroupPattern):
            raise ValueError(f"group_size applies to the 'group' pattern only, not {pattern!r}")
        pattern = GroupPattern(group_size)
    pattern = get_pattern("group" if pattern is None else pattern)
    if (schedule is None) == (sparsity is None):
        raise ValueError("give exactly one of schedule= or sparsity= (a constant target)")
    if schedule is not None:
        return pattern, importance, get_schedule(schedule)
    try:
        return pattern, importance, ConstantSparsity(sparsity)
    except ValueError as e:  # the schedule names its own argument; the caller wrote sparsity=
        raise ValueError(str(e).replace("target_sparsity", "sparsity")) from None


def _is_cloneable(model):
    from keras.src.models.functional import Functional  # no public name for the class

    return isinstance(model, (keras.Sequential, Functional))


def prune(model, schedule=None, *, sparsity=None, pattern="group", group_size=None,
          importance=None, layers=None, per_layer=None, global_sparsity=False, target=None,
          dtype=None, mask_options=None, pruning_schedule=None, block_size=None,
          block_pooling_type=None, sparsity_m_by_n=None, budget=None, profile=None,
          sensitivity_data=None, loss=None, verbose=True):
    """Return a copy of ``model`` whose prunable layers (Dense, Conv2D, Conv1D,
    DepthwiseConv2D, and what :func:`tfscalpel.register_layer` adds) prune as they train.

    The trained weights are kept; ``model`` itself is untouched. Train the result with the
    :class:`~tfscalpel.UpdatePruningStep` callback, then :func:`~tfscalpel.strip` it.

    Args:
        model: a Sequential, Functional or subclassed Keras 3 model. A subclassed one must be
            built and copyable from its config; its layers are found through its attributes
            and swapped in the copy (:mod:`tfscalpel.subclassed`), and ``target=`` plans keep
            only their weight patterns there (node pruning needs the layer graph).
        schedule: a pruning schedule (:mod:`tfscalpel.schedules`, or tfmot's).
        sparsity: shorthand for ``ConstantSparsity(sparsity)``: prune at step 0, then hold.
        pattern: ``"group"`` (SIMD groups, default), ``"unstructured"``, ``"2:4"`` or any
            :class:`~tfscalpel.SparsityPattern`.
        group_size: width of SIMD groups (default 4) for the group pattern.
        importance: block criterion (default RMS for groups, magnitude otherwise).
        layers: names of the layers to prune, or a predicate ``layer -> bool``; default every
            prunable layer (one whose handler has a pruned twin).
        per_layer: ``{layer_name: {"pattern"|"group_size"|"importance"|"schedule"|"sparsity":
            value}}`` overriding the arguments above for single layers.
        global_sparsity: rank all pruned layers together (normalised scores) and apply one
            sparsity across them, instead of the same sparsity in each layer. Every layer keeps
            at least its best block per output unit (a class of the logits layer is never
            deleted); those blocks count towards the kept share (:mod:`tfscalpel.mask_update`).
        target: a hardware target name or :class:`~tfscalpel.HardwareTarget`: the target
            chooses the method per layer (:func:`tfscalpel.plan`; SIMD groups of its width,
            node pruning with MaskLayer gates, 2:4). Then ``per_layer`` takes ``{"method",
            "group_size"}`` overrides, ``schedule``/``sparsity`` drive the group patterns, and
            the result is Functional. Train gates with :class:`~tfscalpel.GateTraining`.
        dtype: with ``target``, the deployment dtype whose SIMD width sets ``g``.
        mask_options: with ``target``, keyword arguments for every inserted MaskLayer.
        pruning_schedule, block_size, block_pooling_type, sparsity_m_by_n: tfmot's names, with
            tfmot's meaning (:func:`tfscalpel.patterns.tfmot_block_pattern`), instead of
            ``schedule`` / ``pattern`` / ``group_size`` / ``importance``.
        budget: with ``target``, a :class:`tfscalpel.Budget`: the plan gives each layer its own
            sparsity so the predicted costs fit (:func:`tfscalpel.plan`'s ``budget``), and the
            plan is printed before anything trains (``verbose=False`` to silence it). Then
            ``sparsity=`` is not allowed; ``schedule`` (default: prune at step 0 and hold) is a
            template ramping each layer to its own sparsity: a schedule with a
            ``final_sparsity`` / ``target_sparsity`` (``PolynomialDecay``,
            ``ConstantSparsity``) gets it replaced per layer.
        profile, sensitivity_data, loss: with ``budget``, as in :func:`tfscalpel.plan`.
        verbose: with ``budget``, print the plan.

    Raises:
        ValueError: for a bad argument, naming the layer and the argument and what is allowed.
    """
    if pruning_schedule is not None:
        if schedule is not None:
            raise ValueError("prune(): give schedule= or tfmot's name pruning_schedule=, not both")
        schedule = pruning_schedule
    # tfscalpel's own default width (no group_size, block_size or pattern object given) is
    # capped at a narrower layer's fan-in; a width the user asked for is checked, not changed.
    implicit_g = pattern == "group" and group_size is None and block_size is None
    tfmot_block = (block_size, block_pooling_type, sparsity_m_by_n)
    if any(arg is not None for arg in tfmot_block):
        if pattern != "group" or group_size is not None or importance is not None:
            raise ValueError("prune(): give tfmot's block_size= / block_pooling_type= / "
                             "sparsity_m_by_n= or tfscalpel's pattern= / group_size= / "
                             "importance=, not both")
        try:
            pattern, importance = tfmot_block_pattern(
                (1, 1) if block_size is None else block_size,
                "AVG" if block_pooling_type is None else block_pooling_type, sparsity_m_by_n)
        except ValueError as e:
            raise ValueError(f"prune(): {e}") from None
    if not _is_cloneable(model) and not is_subclassed(model):
        raise ValueError(
            f"prune() needs a Keras model (Sequential, Functional or subclassed), got "
            f"{type(model).__name__}; prune_low_magnitude() takes a single layer")
    if not model.built and not is_subclassed(model):  # a subclassed one: subclassed.py says
        raise ValueError(
            f"prune(): the {type(model).__name__} model {model.name!r} is not built, so its "
            "layers have no weights to prune yet: start it with keras.Input(shape), or call "
            "model.build(input_shape) (or the model on a batch) before prune()")
    _check_strategy_scope(model)
    if target is not None:
        return _prune_for_target(model, target, schedule, sparsity, pattern, group_size,
                                 importance, layers, per_layer, global_sparsity, dtype,
                                 mask_options, dict(budget=budget, profile=profile,
                                                    sensitivity_data=sensitivity_data, loss=loss),
                                 verbose)
    if dtype is not None or mask_options is not None:
        raise ValueError("dtype= and mask_options= apply only together with target=")
    if budget is not None:
        raise ValueError("budget= applies only together with target= (the budget is priced "
                         "on the target's costs)")
    if profile is not None or sensitivity_data is not None or loss is not None:
        raise ValueError("profile=, sensitivity_data= and loss= apply only with target= and "
                         "budget=")
    names = [layer.name for layer in _top_layers(model)]
    try:
        default = _resolve_spec(pattern, group_size, importance, schedule, sparsity)
    except ValueError as e:
        raise ValueError(f"prune(): {e}") from None

    selected, unprunable = _select_layers(model, layers)
    per_layer = check_per_layer(per_layer, _SPEC_KEYS)
    unknown = sorted(set(per_layer) - set(names))
    if unknown:
        raise ValueError(f"per_layer names unknown layers {unknown}; the model has {names}")
    specs = {}
    for layer in selected:
        overrides = per_layer.pop(layer.name, {})
        bad = sorted(set(overrides) - set(_SPEC_KEYS))
        if bad:
            raise ValueError(
                f"layer {layer.name!r}: unknown per_layer keys {bad}; allowed: {list(_SPEC_KEYS)}"
            )
        specs[layer.name] = _layer_spec(layer.name, default, overrides)
        if implicit_g and "pattern" not in overrides and "group_size" not in overrides:
            specs[layer.name] = _capped_to_fan_in(layer, *specs[layer.name])
    if per_layer:
        raise ValueError(
            f"per_layer configures layers that are not pruned: {sorted(per_layer)}; add them to "
            "layers= (only layers whose handler has a pruned twin can be pruned; see "
            "tfscalpel.register_layer)"
        )
    if unprunable:
        subclasses = sorted({type(layer).__name__ for layer in unprunable
                             if get_handler(layer).twin is not None})
        warnings.warn(
            "tfscalpel.prune: these layers cannot be pruned and stay dense: "
            + ", ".join(f"{layer.name} ({type(layer).__name__})" for layer in unprunable)
            + (f". {subclasses} subclass a prunable type, whose pruned twin would lose what "
               "they add: register a twin for them with tfscalpel.register_layer"
               if subclasses else ""),
            stacklevel=2,
        )

    _warn_fixed_sparsity(specs)
    global_group = "global" if global_sparsity else None
    if is_subclassed(model):
        return _prune_subclassed(model, specs, global_group)

    def clone(layer):
        if layer.name not in specs:
            return layer.__class__.from_config(layer.get_config())
        p, imp, sched = specs[layer.name]
        try:
            return get_handler(layer).make_twin(layer, pattern=p, importance=imp,
                                                schedule=sched, global_group=global_group)
        except ValueError as e:
            message = str(e)
            if not message.startswith("layer "):
                message = f"layer {layer.name!r}: {message}"
            raise ValueError(message) from None

    pruned = keras.models.clone_model(model, clone_function=clone)
    for source, target in zip(model.layers, pruned.layers):
        if source.name in specs:
            # A pruned source keeps its zeros (its blocks score 0 in the new ranking);
            # load_stock_weights copies through NumPy (under JAX a shared buffer would be
            # donated, deleting the original model's weights).
            load_stock_weights(target, source)
        else:
            target.set_weights(source.get_weights())
    return pruned


def _prune_for_target(model, target, schedule, sparsity, pattern, group_size, importance,
                      layers, per_layer, global_sparsity, dtype, mask_options, budget_args,
                      verbose):
    if pattern != "group" or group_size is not None or global_sparsity:
        raise ValueError(
            "with target=, the target chooses pattern and group size; override single layers "
            "with per_layer={name: {'method': ..., 'group_size': ...}}")
    per_layer = check_per_layer(per_layer, ("method", "group_size"))
    if layers is not None:
        chosen, _ = _select_layers(model, layers)
        chosen = {layer.name for layer in chosen}
        for layer in _top_layers(model):
            if get_handler(layer).role == "weighted" and layer.name not in chosen:
                per_layer.setdefault(layer.name, {})["method"] = "none"
    if budget_args["budget"] is not None and sparsity is not None:
        raise ValueError("prune(): with budget=, the budget sets each layer's sparsity; drop "
                         "sparsity= (schedule= may give the ramp)")
    the_plan = plan(model, target, dtype=dtype, per_layer=per_layer, **budget_args)
    if the_plan.allocation is not None and verbose:
        print(the_plan, flush=True)
    return apply_plan(model, the_plan, schedule=schedule, sparsity=sparsity,
                      importance=importance, mask_options=mask_options)


def _capped_to_fan_in(layer, pattern, importance, schedule):
    """The default group width narrowed to the widest kernel width within ``layer``'s fan-in
    (a 1x1 depthwise filter has one input per unit)."""
    if isinstance(pattern, GroupPattern):
        try:
            fan_in = int(get_handler(layer).plan_shape(layer)[0])
        except (AttributeError, ValueError):
            # several prunable weights (MultiHeadAttention, a get_prunable_weights() layer):
            # each twin checks its own width when it builds
            return pattern, importance, schedule
        if pattern.group_size > fan_in:
            pattern = GroupPattern(max(w for w in GROUP_SIZES if w <= fan_in))
    return pattern, importance, schedule


def _warn_fixed_sparsity(specs):
    """Say when a schedule asks for a sparsity that the layer's pattern fixes otherwise (2:4
    prunes half of every 4 whatever the schedule says; its schedule only decides when)."""
    ignored = {}
    for name, (pattern, _, schedule) in specs.items():
        fixed = pattern.fixed_sparsity
        if (fixed is not None and schedule.mode == "sparsity"
                and abs(schedule.final_amount - fixed) > 1e-6):
            key = (pattern.describe(), fixed, schedule.final_amount)
            ignored.setdefault(key, []).append(name)
    for (pattern, fixed, amount), names in ignored.items():
        warnings.warn(f"prune: layers {names}: the pattern {pattern} fixes their sparsity at "
                      f"{fixed:g}, so the schedule's sparsity {amount:g} is not used (the "
                      "schedule only decides when the pattern applies); use the 'group' or "
                      "'unstructured' pattern for another sparsity", stacklevel=3)


def _check_strategy_scope(model):
    """A model whose variables belong to a tf.distribute strategy must be pruned inside that
    strategy's scope: the pruned copy's variables must belong to it too (Keras fails later with
    a bare AssertionError otherwise)."""
    if keras.backend.backend() != "tensorflow" or not model.weights:
        return
    import tensorflow as tf

    strategy = getattr(model.weights[0].value, "_distribute_strategy", None)
    if strategy is None:
        return
    current = tf.distribute.get_strategy() if tf.distribute.has_strategy() else None
    if current is not strategy:
        raise ValueError(
            f"prune(): the model's variables belong to a {type(strategy).__name__}, but prune() "
            "runs outside its scope, so the pruned model's variables would not: call prune() "
            "inside `with strategy.scope():`, where the model was built")


def _layer_spec(name, default, overrides):
    pattern, importance, schedule = default
    if not overrides:
        return default
    try:
        if "pattern" in overrides or "group_size" in overrides:
            pattern = overrides.get("pattern", "group")
        if "schedule" in overrides or "sparsity" in overrides:
            schedule = None
        return _resolve_spec(
            pattern, overrides.get("group_size"), overrides.get("importance", importance),
            overrides.get("schedule", schedule), overrides.get("sparsity"),
        )
    except ValueError as e:
        raise ValueError(f"layer {name!r}: {e}") from None


def _top_layers(model):
    """The layers ``prune`` chooses from: a Sequential or Functional model's layers; for a
    subclassed model the ones with a pruned twin found through its attributes."""
    if not is_subclassed(model):
        return model.layers
    return [layer for layer in prunable_layers(model) if _twin(layer) is not None]


def _prune_subclassed(model, specs, global_group):
    """prune() for a subclassed model: a copy with its chosen layers swapped for their twins
    (:mod:`tfscalpel.subclassed`)."""

    def replace(layer):
        if layer.name not in specs:
            return None
        p, imp, sched = specs[layer.name]
        twin = get_handler(layer).make_twin(layer, pattern=p, importance=imp, schedule=sched,
                                            global_group=global_group)
        build_like(twin, layer, "prune()")
        load_stock_weights(twin, layer)
        return twin

    return copy_model(model, "prune()", replace)


def _select_layers(model, layers):
    """Split the model's layers into (to prune, cannot prune)."""
    by_name = {layer.name: layer for layer in _top_layers(model)}
    if layers is None or callable(layers):
        # Implicit choice: complain only about layers with weights that could matter.
        candidates = [layer for layer in by_name.values() if layers is None or layers(layer)]
        chosen = [layer for layer in candidates if _twin(layer) is not None]
        rest = [
            layer for layer in candidates
            if _twin(layer) is None and layer.trainable_weights and not get_handler(layer).quiet
        ]
        return chosen, rest
    if isinstance(layers, str):
        raise ValueError(f"layers must be a list of names or a predicate, got the string {layers!r}")
    unknown = [name for name in layers if name not in by_name]
    if unknown:
        raise ValueError(f"layers names unknown layers {unknown}; the model has {list(by_name)}")
    # Explicitly named layers that cannot be pruned are all reported.
    candidates = [by_name[name] for name in layers]
    chosen = [layer for layer in candidates if _twin(layer) is not None]
    rest = [layer for layer in candidates if _twin(layer) is None]
    return chosen, rest


def apply_plan(model, the_plan, schedule=None, sparsity=None, importance=None,
               mask_options=None):
    """Build the pruned model for ``the_plan``: weight patterns via :func:`tfscalpel.prune`,
    then the gates. ``schedule`` / ``sparsity`` drive the weight patterns (2:4 alone needs
    neither: its sparsity is fixed). Raises ValueError, with the target registry's reason, for a
    target the exporter cannot serve (``Plan.unsupported``)."""
    if the_plan.unsupported:
        raise ValueError(f"target {the_plan.target!r} cannot be exported, so tfscalpel does not "
                         f"prune for it: {the_plan.unsupported}")
    weighted = {p.name: p for p in the_plan.layers if p.weight_pattern}
    targets = the_plan.allocation.sparsities() if the_plan.allocation is not None else {}
    if targets and sparsity is not None:
        raise ValueError("apply_plan: the plan has a budget allocation, which sets each layer's "
                         "sparsity; drop sparsity=")
    # Gates are inserted around the given layers (insert_masks reuses them), so start from a
    # copy: training the pruned model must never train the caller's model in place.
    # (A subclassed model is copied by prune(); it has no gates.)
    pruned = model if is_subclassed(model) else clone_with_weights(model)
    if weighted:
        patterns = {p.weight_pattern for p in weighted.values()}
        if schedule is None and sparsity is None and not targets:
            if patterns != {"2:4"}:
                raise ValueError(
                    f"the {the_plan.target} plan group-prunes {sorted(n for n, p in weighted.items() if p.method == 'group')}: "
                    "give schedule= or sparsity=")
            sparsity = 0.5  # 2:4 fixes its own sparsity; this only switches it on at step 0
        per_layer = {}
        for name, p in weighted.items():
            if p.method == "group" and name in targets:
                per_layer[name] = {"group_size": p.group_size,
                                   "schedule": _ramp_to(schedule, targets[name], name)}
            elif p.method == "group":
                per_layer[name] = {"group_size": p.group_size}
            else:
                per_layer[name] = {"pattern": "2:4",
                                   **({"sparsity": 0.5} if schedule is None else {})}
        if targets and schedule is None:
            schedule = ConstantSparsity(0.0)  # every budgeted layer has its own schedule
        with warnings.catch_warnings():
            # The target chose 2:4 for some layers: the schedule's sparsity is for its groups.
            warnings.filterwarnings("ignore", message=r"prune: layers .* fixes their sparsity")
            pruned = prune(pruned, schedule, sparsity=sparsity, importance=importance,
                           layers=list(weighted), per_layer=per_layer)
    after = [p.mask_after for p in the_plan.layers if p.node_pruned and not p.heads_gated]
    heads = [p.name for p in the_plan.layers if p.heads_gated]
    if after or heads:
        pruned = insert_masks(pruned, after, mask_options, heads=heads)
    return pruned


def _ramp_to(schedule, target_sparsity, layer):
    """``schedule`` ramping to ``target_sparsity`` instead of its own final sparsity (None:
    prune at step 0 and hold, ``ConstantSparsity``)."""
    if schedule is None:
        return ConstantSparsity(target_sparsity)
    schedule = get_schedule(schedule)
    config = schedule.get_config()
    for key in ("final_sparsity", "target_sparsity"):
        if key in config:
            config[key] = float(target_sparsity)
            if "initial_sparsity" in config:
                config["initial_sparsity"] = min(config["initial_sparsity"], target_sparsity)
            return type(schedule).from_config(config)
    raise ValueError(f"layer {layer!r}: with a budget, schedule= must have a final_sparsity or "
                     f"target_sparsity to set per layer (PolynomialDecay, ConstantSparsity), "
                     f"got {type(schedule).__name__}")
