"""``GateTraining``: the callback that drives node pruning with :class:`~tfscalpel.MaskLayer`.

Training runs in phases of whole epochs:

1. *penalty stages*: the L1 penalty on the gates rises stage by stage (``penalties``, each held
   for ``epochs_per_stage`` epochs), so the least useful nodes die first and the network adapts
   between stages. With ``conv_first=True`` the stages run twice: first on the masks of conv
   feature maps (dense masks feel no penalty), then, with the conv masks frozen, on the dense
   masks -- Scalpel prunes the layers whose removal saves the most work first.
2. *fine-tuning*: every mask is frozen (no penalty, no gradient, the mask fixed) for
   ``finetune_epochs`` epochs, so the surviving weights recover accuracy.

*Coupled channels.* Channels tied by a merge (a residual Add, a squeeze-excite Multiply) are
one channel class for :func:`tfscalpel.strip`: it is removed only when every gate of the class
is dead. Gates trained one by one rarely all die (a ResNet keeps every such channel), so by
default each class's gates are tied to one value, their mean, after every training batch: with
equal starting values that is one shared gate moved by the group's mean gradient
(Torch-Pruning's group importance).

Train for :attr:`GateTraining.total_epochs` epochs. Penalty and frozen flag are layer weights,
so a run resumed with ``initial_epoch`` (or ``BackupAndRestore``) continues in the right phase.
"""
import keras
import numpy as np

from tfscalpel.backend_state import sync_model_state
from tfscalpel.checks import is_integer, is_number
from tfscalpel.gates import mask_layers

_KINDS = ("conv", "dense")


def _kind(layer):
    return "conv" if getattr(layer, "input_rank", 2) > 2 else "dense"


def _check_penalties(penalties, arg):
    penalties = tuple(penalties)
    if not penalties or any(not is_number(p) or not p >= 0 for p in penalties):
        raise ValueError(f"{arg} must be a non-empty sequence of numbers >= 0, got {penalties!r}")
    if any(b < a for a, b in zip(penalties, penalties[1:])):
        raise ValueError(f"{arg} must not decrease from stage to stage, got {penalties!r}")
    return tuple(float(p) for p in penalties)


class GateTraining(keras.callbacks.Callback):
    """Set every MaskLayer's penalty and frozen flag at the start of each epoch.

    Args:
        penalties: increasing L1 strengths, one per stage; or ``{"conv": [...], "dense":
            [...]}`` (as many stages each) for separate strengths on the masks of conv feature
            maps and of Dense outputs. A conv channel sums its gradient over every position of
            the feature map, so it usually needs a stronger penalty than a Dense unit. The dict
            may also name single MaskLayers (``{"conv": ..., "dense": ..., "mask_pool1":
            [...]}``, as many stages): such a mask takes its own strengths, in the phase of its
            kind (the layers of a network differ in how readily their nodes die: LeNet-5's
            first conv layer needs a stronger push than its second).
        epochs_per_stage: epochs each stage lasts (integer >= 1).
        conv_first: run the stages on conv masks first, then on dense masks.
        finetune_epochs: epochs with every mask frozen at the end (integer >= 0).
        rescale_dropout: scale each Dropout directly after a MaskLayer to
            ``original rate * kept fraction`` of that mask at every epoch start (fewer nodes
            need less dropout). The train function is rebuilt when a rate changes.
        tie_coupled: after every training batch, set the gates of each coupled channel class
            (:func:`tfscalpel.dependency.coupled_gates`) to their mean, so such channels die
            together (module docstring). Models without merges have no such classes.
        tie_windows: also tie the 4 gates of each 2:4 window of a 2:4-pruned layer's inputs,
            so strip can remove whole windows (a dead channel in a partly live window stays,
            as zeros). Off by default: tied windows die in blocks of 4 and cost accuracy (the
            GPU plan of colab/02_node_pruning_cnn.ipynb: 43.1 % tied, 87.8 % untied, dense
            91.5 %).
    """

    def __init__(self, penalties=(1e-4, 3e-4, 1e-3), epochs_per_stage=1, conv_first=False,
                 finetune_epochs=1, rescale_dropout=False, tie_coupled=True,
                 tie_windows=False):
        super().__init__()
        if isinstance(penalties, dict):
            if not set(_KINDS) <= set(penalties) or not all(isinstance(k, str) for k in penalties):
                raise ValueError(f"penalties as a dict needs the keys {list(_KINDS)} (and "
                                 f"optionally MaskLayer names), got {sorted(map(str, penalties))}")
            by_kind = {key: _check_penalties(value, f"penalties[{key!r}]")
                       for key, value in penalties.items()}
            for key, value in by_kind.items():
                if len(value) != len(by_kind["dense"]):
                    raise ValueError(f"penalties[{key!r}] and penalties['dense'] need the same "
                                     f"number of stages, got {len(value)} and "
                                     f"{len(by_kind['dense'])}")
        else:
            by_kind = dict.fromkeys(_KINDS, _check_penalties(penalties, "penalties"))
        for arg, v, low in (("epochs_per_stage", epochs_per_stage, 1),
                            ("finetune_epochs", finetune_epochs, 0)):
            if not is_integer(v) or v < low:
                raise ValueError(f"{arg} must be an integer >= {low}, got {v!r}")
        self.penalties = by_kind
        self.epochs_per_stage = int(epochs_per_stage)
        self.conv_first = bool(conv_first)
        self.finetune_epochs = int(finetune_epochs)
        self.rescale_dropout = bool(rescale_dropout)
        self.tie_coupled = bool(tie_coupled)
        self.tie_windows = bool(tie_windows)
        self._ties = None  # (MaskLayers, their slices of one gate vector, group per position)
        self._dropout_rates = {}
        self._named_kinds = {}

    @property
    def _stages(self):
        return len(self.penalties["dense"])

    @property
    def _phases(self):
        return (("conv",), ("dense",)) if self.conv_first else (_KINDS,)

    @property
    def total_epochs(self):
        """Epochs of the whole run: every penalty stage of every phase, then fine-tuning."""
        return len(self._phases) * self._stages * self.epochs_per_stage + self.finetune_epochs

    def settings(self, epoch):
        """``{"conv": (penalty, frozen), "dense": (penalty, frozen)}`` for an epoch index, plus
        one entry per MaskLayer named in ``penalties``."""
        stage_epochs = self._stages * self.epochs_per_stage
        phase, within = divmod(epoch, stage_epochs)
        out = {}
        for key, strengths in self.penalties.items():
            # The phase in which this kind of mask is trained; before it, no penalty; after it,
            # frozen. A named mask follows the phase of its kind (known once it is seen).
            kind = self._named_kinds.get(key, key)
            own = next((i for i, p in enumerate(self._phases) if kind in p), 0)
            if phase < own:
                out[key] = (0.0, False)
            elif phase == own:
                out[key] = (float(strengths[within // self.epochs_per_stage]), False)
            else:
                out[key] = (0.0, True)
        return out

    def on_epoch_begin(self, epoch, logs=None):
        layers = mask_layers(self.model)
        if not layers:
            raise ValueError(
                "GateTraining: the model has no MaskLayer; build it with tfscalpel.prune(model, "
                "target=...) or insert tfscalpel.MaskLayer after the layers to node-prune"
            )
        named = set(self.penalties) - set(_KINDS)
        missing = named - {layer.name for layer in layers}
        if missing:
            raise ValueError(f"GateTraining: penalties name {sorted(missing)}, which are not "
                             f"MaskLayers of the model; its MaskLayers: "
                             f"{[layer.name for layer in layers]}")
        self._named_kinds = {layer.name: _kind(layer) for layer in layers if layer.name in named}
        settings = self.settings(epoch)
        for layer in layers:
            penalty, frozen = settings[layer.name if layer.name in named else _kind(layer)]
            layer.penalty.assign(penalty)
            layer.frozen.assign(1.0 if frozen else 0.0)
        if self.rescale_dropout:
            self._rescale_dropout()

    def on_train_begin(self, logs=None):
        self._ties = self._coupled_groups() if self.tie_coupled else None

    def _coupled_groups(self):
        from tfscalpel.dependency import coupled_gates
        from tfscalpel.prune_model import _is_cloneable

        if not _is_cloneable(self.model):
            return None  # no graph to read couplings from: gates stay independent
        groups = coupled_gates(self.model, windows=self.tie_windows)
        if not groups:
            return None
        names = sorted({name for group in groups for name, _ in group})
        layers = [self.model.get_layer(name) for name in names]
        starts = dict(zip(names, np.cumsum([0] + [layer.units for layer in layers])))
        # every position its own group, then the coupled positions share one
        group_of = np.arange(starts[names[-1]] + layers[-1].units)
        for group in groups:
            first = starts[group[0][0]] + group[0][1]
            for name, k in group:
                group_of[starts[name] + k] = first
        return layers, [starts[name] for name in names], group_of

    def on_train_batch_end(self, batch, logs=None):
        if self._ties is None:
            return
        layers, starts, group_of = self._ties
        sync_model_state(self.model)
        # In gate units (layers may differ in gate_scale); raw variables, as keras.ops calls on
        # each small tensor would cost more than the tying itself.
        values = np.concatenate([keras.ops.convert_to_numpy(layer.gate_param) * layer.gate_scale
                                 for layer in layers]).astype(np.float64)
        counts = np.bincount(group_of, minlength=len(values))
        sums = np.bincount(group_of, weights=values, minlength=len(values))
        tied = (sums / np.maximum(counts, 1))[group_of]
        for layer, start in zip(layers, starts):
            layer.gate_param.assign(
                (tied[start:start + layer.units] / layer.gate_scale).astype("float32"))

    def _rescale_dropout(self):
        changed = False
        for layer in self.model.layers:
            if not isinstance(layer, keras.layers.Dropout):
                continue
            source = layer._inbound_nodes[0].parent_nodes if layer._inbound_nodes else []
            gate = source[0].operation if len(source) == 1 else None
            if not isinstance(gate, keras.layers.Layer) or gate not in mask_layers(self.model):
                continue
            base = self._dropout_rates.setdefault(layer.name, layer.rate)
            rate = base * gate.num_kept() / gate.units
            if rate != layer.rate:
                layer.rate, changed = rate, True
        if changed:
            # Dropout's rate is a Python number traced into the train function.
            self.model.make_train_function(force=True)


def gate_optimizer(learning_rate=1e-3, weight_decay=0.0):
    """The optimizer for training gates: Adam, or AdamW at ``weight_decay > 0``.

    The decay is decoupled (AdamW) and applies to the weights only, never to the MaskLayers'
    gates: the L1 penalty of :class:`GateTraining` alone decides which nodes die, and it acts
    through the penalty stages only, while weight decay keeps regularising the surviving weights
    through the frozen fine-tuning (LeNet-300-100's GPU plan: 0.02, chosen on a validation split).

    Args:
        learning_rate: a float > 0 or a ``keras.optimizers.schedules.LearningRateSchedule``.
        weight_decay: a float >= 0 (0: plain Adam).
    """
    if not is_number(weight_decay) or not 0 <= weight_decay < float("inf"):
        raise ValueError(f"gate_optimizer: weight_decay must be a finite number >= 0, got "
                         f"{weight_decay!r}")
    if not isinstance(learning_rate, keras.optimizers.schedules.LearningRateSchedule) and (
            not is_number(learning_rate) or not learning_rate > 0):
        raise ValueError(f"gate_optimizer: learning_rate must be a number > 0 or a "
                         f"LearningRateSchedule, got {learning_rate!r}")
    if is_number(learning_rate):
        learning_rate = float(learning_rate)  # Keras refuses NumPy scalars
    if not weight_decay:
        return keras.optimizers.Adam(learning_rate)
    opt = keras.optimizers.AdamW(learning_rate, weight_decay=float(weight_decay))
    opt.exclude_from_weight_decay(var_names=["gate_param"])
    return opt
