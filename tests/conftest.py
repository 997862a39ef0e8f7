"""Shared test set-up: quiet TensorFlow, seeded randomness, two logical CPUs for distribution tests."""
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np
import pytest
import tensorflow as tf

# Two logical CPU devices so MirroredStrategy tests have two replicas. Must happen before any
# op runs, hence at conftest import.
_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration(), tf.config.LogicalDeviceConfiguration()]
)

import keras  # noqa: E402
from keras.src.backend.common import global_state  # noqa: E402


# Global-state keys that seeding (and importing Keras) set by themselves: not a built model.
_SEEDING_STATE = {"nnx_enabled", "global_random_seed", "global_seed_generator"}


@pytest.fixture(autouse=True)
def _seed_everything():
    keras.utils.set_random_seed(1234)
    np.random.seed(1234)
    yield
    # clear_session costs ~0.16 s (a full gc.collect); only tests that created Keras objects leave
    # global state (layer-name counters, ...) behind, so only they need it.
    if set(vars(global_state.GLOBAL_STATE_TRACKER)) - _SEEDING_STATE:
        keras.backend.clear_session()
