"""Walking and rebuilding the graph of a Sequential or Functional Keras model.

One implementation of graph surgery, used to insert :class:`~tfscalpel.MaskLayer` gates
(:func:`tfscalpel.prune` with a target) and to rebuild a model with fewer nodes
(:func:`tfscalpel.strip`): nodes are visited in execution order and every layer is replaced
once (a layer shared by several nodes stays shared).
"""
import keras


def functional_graph(model):
    """The Functional graph behind ``model`` (a Sequential model's inner one).

    Raises ValueError for subclassed models and unbuilt Sequential models.
    """
    from keras.src.models.functional import Functional  # no public name for the class

    if isinstance(model, keras.Sequential):
        graph = getattr(model, "_functional", None)
        if graph is None:
            raise ValueError(
                f"Sequential model {model.name!r} has no graph yet: start it with keras.Input(...)"
                " or build it before pruning or stripping"
            )
        return graph
    if isinstance(model, Functional):
        return model
    raise ValueError(
        f"graph surgery needs a Sequential or Functional model, got {type(model).__name__}"
    )


def nodes_in_order(model):
    """The operation nodes of ``model``'s graph in an order in which they can run (inputs
    excluded), as Keras itself runs them."""
    graph = functional_graph(model)
    order = []
    for depth in sorted(graph._nodes_by_depth, reverse=True):
        order.extend(n for n in graph._nodes_by_depth[depth] if n.operation and not n.is_input)
    return order


def node_inputs(node):
    """The KerasTensors a node consumes, flattened."""
    return list(node.arguments.keras_tensors)


def clone_with_weights(model):
    """A fresh model with the same architecture and weights (no shared layers)."""
    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


def rebuild(model, replace, insert_after=None):
    """A new Functional model with every layer of ``model`` passed through ``replace``.

    Args:
        model: a Sequential or Functional model.
        replace: ``layer -> new layer`` or None; None drops the layer, which must then take
            exactly one tensor (its output becomes its input, e.g. a removed MaskLayer).
        insert_after: optional ``layer -> list of new layers`` applied in turn to the output
            of the (replaced) layer, e.g. a MaskLayer after a convolution.

    Returns the new model; weights are whatever ``replace`` put in the new layers.
    """
    graph = functional_graph(model)
    insert_after = insert_after or (lambda layer: [])
    tensors = {}
    new_inputs = []
    for x in graph.inputs:
        source = x._keras_history.operation
        y = keras.Input(batch_shape=x.shape, dtype=x.dtype, name=source.name)
        tensors[id(x)] = y
        new_inputs.append(y)

    replaced, inserted = {}, {}
    for node in nodes_in_order(model):
        layer = node.operation
        if id(layer) not in replaced:
            replaced[id(layer)] = replace(layer)
            inserted[id(layer)] = list(insert_after(layer))
        new_layer = replaced[id(layer)]
        if new_layer is None:
            ins = node_inputs(node)
            if len(ins) != 1 or len(node.outputs) != 1:
                raise ValueError(f"layer {layer.name!r}: only a single-input layer can be dropped")
            outputs = tensors[id(ins[0])]
        else:
            args, kwargs = node.arguments.fill_in(tensors)
            outputs = new_layer(*args, **kwargs)
        for extra in inserted[id(layer)]:
            outputs = extra(outputs)
        for x, y in zip(node.outputs, keras.tree.flatten(outputs)):
            tensors[id(x)] = y

    outputs = [tensors[id(x)] for x in graph.outputs]
    new_inputs = keras.tree.pack_sequence_as(graph._inputs_struct, new_inputs)
    outputs = keras.tree.pack_sequence_as(graph._outputs_struct, outputs)
    return keras.Model(new_inputs, outputs, name=model.name)
