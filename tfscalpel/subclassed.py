"""Subclassed Keras models: pruning and stripping without a layer graph.

A subclassed model has no graph to rebuild, so :func:`tfscalpel.prune` and :func:`tfscalpel.strip`
work on a *copy* made from its config (``from_config(get_config())``, as ``keras.models.
clone_model`` does for such models), built by one call on zeros of the shape the original was
built with, given the original's weights, and then with its layers swapped in place: a stock
layer for its pruned twin (prune) or a twin for its stock layer (strip). The layers are found
through the model's attributes, plain or in lists, and inside custom sublayers.

What this cannot do: node pruning (gates need the graph to know who reads a channel), so a
target plan keeps only its weight patterns there (a hand-built GatedMultiHeadAttention is the
exception: its heads are read by its own output projection, so strip removes its dead heads); and a model whose ``get_config`` does not give
back its constructor arguments cannot be copied (the error says so).
"""
import keras
import numpy as np

from tfscalpel.layer_handlers import get_handler


def is_subclassed(model):
    """True for a ``keras.Model`` that is neither Sequential nor Functional."""
    from keras.src.models.functional import Functional  # no public name for the class

    return isinstance(model, keras.Model) and not isinstance(model, (keras.Sequential,
                                                                     Functional))


def children(parent):
    """``[(container, key, layer)]`` for every direct sublayer of ``parent`` reachable through
    an attribute (``container`` is ``parent`` and ``key`` the attribute name) or a list attribute
    (``container`` the list, ``key`` the index)."""
    tracked = {id(layer) for layer in getattr(parent, "_layers", [])}
    found = []
    for name, value in vars(parent).items():
        if name == "_layers":
            continue
        if isinstance(value, keras.layers.Layer) and id(value) in tracked:
            found.append((parent, name, value))
        elif isinstance(value, list):
            found.extend((value, i, v) for i, v in enumerate(value)
                         if isinstance(v, keras.layers.Layer) and id(v) in tracked)
    return found


def prunable_layers(model):
    """The layers of a subclassed model that have a pruned twin or are one (not descending into
    them), in attribute order."""
    found = []

    def visit(parent):
        for _, _, layer in children(parent):
            if get_handler(layer).pruned_twin(layer) is not None or _is_pruned(layer):
                found.append(layer)
            else:
                visit(layer)

    visit(model)
    return found


def _is_pruned(layer):
    """A pruned twin, a twin holding pruned sublayers, or a layer with its own node gates
    (GatedMultiHeadAttention, whose heads strip removes)."""
    from tfscalpel.attention_layers import GatedMultiHeadAttention
    from tfscalpel.layers import PrunableMixin

    return (isinstance(layer, (PrunableMixin, GatedMultiHeadAttention))
            or bool(getattr(layer, "pruned_container", False)))


def swap_layers(model, replace):
    """In place: every sublayer ``layer`` of ``model`` for which ``replace(layer)`` returns a
    new layer is replaced by it, at the same attribute and at the same place in its parent's
    tracked layers (so weights keep their order); others are searched for sublayers in turn."""

    def visit(parent):
        for container, key, layer in children(parent):
            new = replace(layer)
            if new is None:
                visit(layer)
                continue
            if container is parent:
                object.__setattr__(parent, key, new)  # bypass tracking: placed by hand below
            else:
                list.__setitem__(container, key, new)
            index = next(i for i, t in enumerate(parent._layers) if t is layer)
            parent._layers[index] = new

    visit(model)


def _build_shapes(layer, what):
    shapes = getattr(layer, "_build_shapes_dict", None)
    if not layer.built or shapes is None:
        which = (f"the subclassed model {layer.name!r}" if isinstance(layer, keras.Model)
                 else f"layer {layer.name!r} of the subclassed model")
        raise ValueError(f"{what}: {which} is not built: call the model on a batch (or "
                         "model.build(input_shape)) first")
    return shapes


def copy_model(model, what, replace):
    """A built copy of the subclassed ``model`` whose layers ``replace`` swaps (see
    :func:`swap_layers`; it is given the *original* layer and returns its built, weighted
    replacement or None), every other layer with the original's weights. ``what`` names the
    caller in errors."""
    shapes = _build_shapes(model, what)
    if len(shapes) != 1:
        raise ValueError(f"{what}: the subclassed model {model.name!r} takes several inputs; "
                         "build it as a Functional model")
    try:
        copy = model.__class__.from_config(model.get_config())
        (shape,) = shapes.values()
        copy(np.zeros([1 if d is None else int(d) for d in shape], "float32"))
    except Exception as e:  # noqa: BLE001 -- any failure means: cannot be copied
        cause = " ".join(str(e).split())[:200]
        raise ValueError(
            f"{what}: the subclassed model {model.name!r} ({type(model).__name__}) cannot be "
            f"copied from its config ({type(e).__name__}: {cause}). Give it a get_config() "
            "that returns its constructor arguments, or build it as a Sequential / Functional "
            "model") from None
    originals = {id(c): m for m, c in zip(prunable_layers(model), prunable_layers(copy))}
    new = set()

    def swap(layer):
        original = originals.get(id(layer))
        result = None if original is None else replace(original)
        if result is not None:
            new.add(id(result))
        return result

    swap_layers(copy, swap)
    _copy_weights(model, copy, new, what)
    return copy


def _copy_weights(source, target, skip, what):
    """Give ``target``'s layers ``source``'s weights, pairing sublayers by position; layers in
    ``skip`` (ids in ``target``) already have theirs."""
    pairs = list(zip(children(source), children(target)))
    if len(children(source)) != len(children(target)):
        raise ValueError(f"{what}: the copy of {source.name!r} made from its config has other "
                         "layers; give it a get_config() that returns its constructor arguments")
    own = source._trainable_variables + source._non_trainable_variables
    for s, t in zip(own, target._trainable_variables + target._non_trainable_variables):
        t.assign(s)
    for (_, _, a), (_, _, b) in pairs:
        if id(b) in skip:
            continue
        if children(a):
            _copy_weights(a, b, skip, what)
        else:
            b.set_weights(a.get_weights())


def build_like(new, layer, what):
    """Build ``new`` with the input shapes ``layer`` was built with."""
    new.build(**_build_shapes(layer, what))
    return new
