"""Loss derivatives with respect to a few of a model's variables, on the active Keras backend.

Keras 3 has no backend-neutral ``grad``, so :func:`tfscalpel.calibrate` asks this module for
the three quantities it needs and it computes them with the backend's own autodiff:
``tf.GradientTape`` under TensorFlow, ``jax.grad`` / ``jax.jacrev`` / ``jax.jvp`` under JAX
(the model runs statelessly there: the variables' values are the traced arguments, through a
``keras.StatelessScope``). TensorFlow and JAX are imported only when their backend is active,
so ``import tfscalpel`` works without TensorFlow.

Every result is a list of NumPy arrays, one per variable, shaped like it.
"""
import keras
import numpy as np

SUPPORTED_BACKENDS = ("tensorflow", "jax")


def for_backend(model, variables, per_example):
    """The derivative engine for the active backend.

    Args:
        model: the Keras model (called with ``training=False``).
        variables: the variables to differentiate with respect to (e.g. pruned kernels).
        per_example: ``fn(y_true, y_pred) -> (batch,)`` per-example losses (keras.ops code).

    Raises:
        ValueError: on a backend other than TensorFlow or JAX.
    """
    backend = keras.backend.backend()
    if backend == "tensorflow":
        return _TensorFlowGradients(model, variables, per_example)
    if backend == "jax":
        return _JaxGradients(model, variables, per_example)
    raise ValueError(f"calibrate(): gradients are implemented for the backends "
                     f"{SUPPORTED_BACKENDS}, not KERAS_BACKEND={backend!r}")


class _TensorFlowGradients:
    def __init__(self, model, variables, per_example):
        import tensorflow as tf

        self.tf, self.model, self.variables, self.per_example = tf, model, variables, per_example

        # One traced function for the whole run (a fresh jacobian per call would retrace).
        @tf.function(reduce_retracing=True)
        def squared_jacobian(x, y):
            with tf.GradientTape() as tape:
                losses = per_example(y, model(x, training=False))
            jac = tape.jacobian(losses, variables, experimental_use_pfor=True)
            return [tf.reduce_sum(tf.square(j), axis=0) for j in jac]

        self._squared_jacobian = squared_jacobian

    def _mean_loss(self, x, y):
        return self.tf.reduce_mean(self.per_example(y, self.model(x, training=False)))

    def gradient(self, x, y):
        """``d mean_loss / d w`` for every variable."""
        with self.tf.GradientTape() as tape:
            value = self._mean_loss(x, y)
        return [keras.ops.convert_to_numpy(g) for g in tape.gradient(value, self.variables)]

    def squared_example_gradients(self, x, y):
        """``sum over examples of (d loss_n / d w)^2`` for every variable."""
        return [keras.ops.convert_to_numpy(s) for s in self._squared_jacobian(x, y)]

    def gradient_and_hvp(self, x, y, vectors):
        """The mean-loss gradient and the Hessian-vector products ``H v`` for ``vectors`` (one
        per variable)."""
        tf = self.tf
        with tf.GradientTape() as outer:
            with tf.GradientTape() as inner:
                value = self._mean_loss(x, y)
            g = inner.gradient(value, self.variables)
            # d/dw (g . v) = H v: one extra backward pass instead of the whole Hessian.
            gv = tf.add_n([tf.reduce_sum(gi * vi) for gi, vi in zip(g, vectors)])
        hv = outer.gradient(gv, self.variables)
        return ([keras.ops.convert_to_numpy(t) for t in g],
                [keras.ops.convert_to_numpy(t) for t in hv])


class _JaxGradients:
    def __init__(self, model, variables, per_example):
        import jax

        self.jax, self.model, self.variables, self.per_example = jax, model, variables, per_example

        def losses(values, x, y):
            # The model reads ``values`` for ``variables`` (and the stored values of the rest).
            with keras.StatelessScope(state_mapping=list(zip(variables, values))):
                return per_example(y, model(x, training=False))

        def mean_loss(values, x, y):
            return jax.numpy.mean(losses(values, x, y))

        def squared_jacobian(values, x, y):
            return [jax.numpy.sum(jax.numpy.square(j), axis=0)
                    for j in jax.jacrev(losses)(values, x, y)]

        def gradient_and_hvp(values, x, y, vectors):
            # Forward-over-reverse: the JVP of the gradient along v is H v.
            return jax.jvp(lambda w: jax.grad(mean_loss)(w, x, y), (values,), (vectors,))

        self._grad = jax.jit(jax.grad(mean_loss))
        self._squared_jacobian = jax.jit(squared_jacobian)
        self._gradient_and_hvp = jax.jit(gradient_and_hvp)

    def _values(self):
        return [self.jax.numpy.asarray(v.value) for v in self.variables]

    def gradient(self, x, y):
        return [np.asarray(g) for g in self._grad(self._values(), x, y)]

    def squared_example_gradients(self, x, y):
        return [np.asarray(s) for s in self._squared_jacobian(self._values(), x, y)]

    def gradient_and_hvp(self, x, y, vectors):
        vectors = [self.jax.numpy.asarray(v) for v in vectors]
        g, hv = self._gradient_and_hvp(self._values(), x, y, vectors)
        return [np.asarray(t) for t in g], [np.asarray(t) for t in hv]
