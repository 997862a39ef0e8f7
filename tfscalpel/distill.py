"""Knowledge distillation for the fine-tuning of a pruned model (Hinton et al. 2015).

The pruned student learns from the labels *and* from the dense teacher's softened outputs, which
carry how the teacher ranks the wrong classes; that recovers accuracy a pruned network loses::

    distiller = tfscalpel.Distiller(student=pruned, teacher=dense, temperature=4.0, weight=1.0)
    distiller.compile(optimizer="adam",
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    distiller.fit(x, y, callbacks=[tfscalpel.UpdatePruningStep()])   # or GateTraining(...)
    plain = tfscalpel.strip(distiller.student)

The training loss is ``hard + weight * T**2 * KL(softmax(teacher / T) || softmax(student / T))``,
where ``hard`` is the compiled loss on the labels plus every penalty the student's layers add
(the MaskLayer gates' L1, regularisers), ``T`` the temperature (``T**2`` keeps the soft term's
gradients on the scale of the hard term's, as in Hinton et al.). Evaluation reports the hard loss
only, so validation numbers compare with an undistilled run. The callbacks of tfscalpel find the
student's pruned layers and MaskLayers through the wrapper (nested models are searched).

*Node pruning: distil the fine-tuning only.* With :class:`~tfscalpel.GateTraining` the teacher's
soft term works against the L1 penalty: it holds dying gates up (LeNet-300-100's GPU plan, tied
2:4 windows, distilled through the penalty stages at L1 x2.2 still kept 296 of 300 fc1 nodes).
``during="finetune"`` applies the soft term only once every MaskLayer of the student is frozen,
i.e. in GateTraining's fine-tuning; while any gate trains, the teacher is not run at all and the
loss is exactly the hard loss, so the penalty stages, and the nodes that die, are those of an
undistilled run with the same seed::

    gates = tfscalpel.GateTraining(penalties=..., finetune_epochs=20)
    distiller = tfscalpel.Distiller(pruned, dense, temperature=2.0, weight=0.5, during="finetune")
    distiller.compile(optimizer=tfscalpel.gate_optimizer(lr, weight_decay=0.02), loss=...)
    distiller.fit(x, y, epochs=gates.total_epochs, callbacks=[gates])
"""
import functools

import keras
from keras import ops

from tfscalpel.checks import is_number
from tfscalpel.gates import mask_layers

#: ``Distiller(during=...)``: when the soft term applies.
DURING = ("all", "finetune")


def _check_positive(value, arg, allow_zero):
    if not is_number(value) or not (value >= 0 if allow_zero else value > 0):
        raise ValueError(f"Distiller: {arg} must be a number {'>=' if allow_zero else '>'} 0, "
                         f"got {value!r}")
    return float(value)


class Distiller(keras.Model):
    """Train ``student`` on the labels and on ``teacher``'s temperature-softened outputs.

    Args:
        student: the model being trained (a pruned model from :func:`tfscalpel.prune`, a
            gated one, or any Keras model); its trained weights are ``distiller.student``'s.
        teacher: the model to learn from, usually the dense model the student was pruned from.
            It is frozen (``trainable = False``) and run in inference mode.
        temperature: ``T > 0``; larger values soften both distributions more.
        weight: ``>= 0``, the soft term's weight against the hard loss (0: plain training).
        from_logits: whether both models output logits (default) or probabilities (softmax
            outputs; then their logarithm is used as logits).
        during: ``"all"`` (default): every training step; ``"finetune"``: only the steps in
            which every MaskLayer of the student is frozen (GateTraining's fine-tuning); the
            other steps train on the hard loss alone without running the teacher (module
            docstring). ``"finetune"`` needs a student with MaskLayers.

    Save ``distiller.student`` (the wrapper itself holds no state of its own worth saving).
    """

    def __init__(self, student, teacher, temperature=4.0, weight=1.0, from_logits=True,
                 during="all", **kwargs):
        super().__init__(**kwargs)
        for arg, model in (("student", student), ("teacher", teacher)):
            if not isinstance(model, keras.Model):
                raise ValueError(f"Distiller: {arg} must be a Keras model, got "
                                 f"{type(model).__name__}")
        if student is teacher:
            raise ValueError("Distiller: the teacher must be another model than the student "
                             "(e.g. the dense model the student was pruned from)")
        self.student = student
        self.teacher = teacher
        self.teacher.trainable = False
        self.temperature = _check_positive(temperature, "temperature", allow_zero=False)
        self.weight = _check_positive(weight, "weight", allow_zero=True)
        self.from_logits = bool(from_logits)
        if during not in DURING:
            raise ValueError(f"Distiller: during must be one of {list(DURING)}, got {during!r}")
        if during == "finetune" and not mask_layers(student):
            raise ValueError("Distiller: during='finetune' distils only while every MaskLayer is "
                             "frozen, and the student has no MaskLayer; build it with "
                             "tfscalpel.prune(model, target=...) or use during='all'")
        self.during = during

    def call(self, inputs, training=False):
        return self.student(inputs, training=training)

    def _log_probs(self, outputs):
        if not self.from_logits:
            outputs = ops.log(ops.clip(outputs, 1e-12, 1.0))
        return ops.log_softmax(outputs / self.temperature, axis=-1)

    def distillation_loss(self, teacher_outputs, student_outputs):
        """``T**2 * KL(teacher || student)`` on softened outputs, averaged over the batch."""
        if tuple(teacher_outputs.shape[1:]) != tuple(student_outputs.shape[1:]):
            raise ValueError(
                f"Distiller: the teacher's outputs {tuple(teacher_outputs.shape)} and the "
                f"student's {tuple(student_outputs.shape)} differ in shape; both must give one "
                "score per class")
        log_t = self._log_probs(ops.cast(teacher_outputs, "float32"))
        log_s = self._log_probs(ops.cast(student_outputs, "float32"))
        kl = ops.sum(ops.exp(log_t) * (log_t - log_s), axis=-1)
        return self.temperature ** 2 * ops.mean(kl)

    def compute_loss(self, x=None, y=None, y_pred=None, sample_weight=None, training=True):
        hard = super().compute_loss(x, y, y_pred, sample_weight, training=training)
        if not training or self.weight == 0.0:
            return hard
        def soft():
            teacher_outputs = ops.stop_gradient(self.teacher(x, training=False))
            return self.weight * self.distillation_loss(teacher_outputs, y_pred)

        if self.during == "all":
            return hard + soft()
        # Only once every gate is frozen; a conditional, so the penalty stages neither run the
        # teacher nor see anything but the hard loss (+ 0.0, exact).
        frozen = functools.reduce(ops.minimum, [ops.convert_to_tensor(layer.frozen)
                                                for layer in mask_layers(self.student)])
        return hard + ops.cond(frozen > 0.5, soft, lambda: ops.zeros((), "float32"))
