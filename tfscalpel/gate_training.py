"""``GateTraining``: the callback that drives node pruning with :class:`~tfscalpel.MaskLayer`.

Training runs in phases of whole epochs:

1. *penalty stages*: the L1 penalty on the gates rises stage by stage (``penalties``, each held
   for ``epochs_per_stage`` epochs), so the least useful nodes die first and the network adapts
   between stages. With ``conv_first=True`` the stages run twice: first on the masks of conv
   feature maps (dense masks feel no penalty), then, with the conv masks frozen, on the dense
   masks -- Scalpel prunes the layers whose removal saves the most work first.
2. *fine-tuning*: every mask is frozen (no penalty, no gradient, the mask fixed) for
   ``finetune_epochs`` epochs, so the surviving weights recover accuracy.

Train for :attr:`GateTraining.total_epochs` epochs. Penalty and frozen flag are layer weights,
so a run resumed with ``initial_epoch`` (or ``BackupAndRestore``) continues in the right phase.
"""
import keras

from tfscalpel.gates import mask_layers

_KINDS = ("conv", "dense")


def _kind(layer):
    return "conv" if getattr(layer, "input_rank", 2) > 2 else "dense"


def _check_penalties(penalties, arg):
    penalties = tuple(penalties)
    if not penalties or any(isinstance(p, bool) or not isinstance(p, (int, float)) or p < 0
                            for p in penalties):
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
    """

    def __init__(self, penalties=(1e-4, 3e-4, 1e-3), epochs_per_stage=1, conv_first=False,
                 finetune_epochs=1, rescale_dropout=False):
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
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{arg} must be an integer >= {low}, got {v!r}")
        self.penalties = by_kind
        self.epochs_per_stage = epochs_per_stage
        self.conv_first = bool(conv_first)
        self.finetune_epochs = finetune_epochs
        self.rescale_dropout = bool(rescale_dropout)
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
