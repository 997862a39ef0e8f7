"""The small base shared by patterns, importance criteria and schedules: plain Python objects
that Keras can serialise (``get_config``/``from_config``), compare by config, and that can be
looked up by a registered name."""
import keras


class ConfigObject:
    """Equality and ``repr`` from ``get_config``; ``from_config`` calls the constructor."""

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __eq__(self, other):
        return type(self) is type(other) and self.get_config() == other.get_config()

    def __hash__(self):
        return hash((type(self).__name__, repr(sorted(self.get_config().items()))))

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def registrar(registry, name_attribute):
    """A class decorator factory: ``@register("rms")`` files the class in ``registry`` under
    that name, stores the name on the class, and makes it Keras-serialisable."""

    def register(name):
        def wrap(cls):
            registry[name] = cls
            setattr(cls, name_attribute, name)
            return keras.saving.register_keras_serializable(package="tfscalpel")(cls)

        return wrap

    return register


def serialize_pruning_args(args):
    """A pruned layer's ``pattern`` / ``importance`` / ``schedule`` / ``global_group`` as the
    config dict its constructor accepts back: the objects as Keras config dicts, the group name
    (a plain string) and unset values as they are."""
    return {key: (value if key == "global_group" or value is None
                  else keras.saving.serialize_keras_object(value))
            for key, value in args.items()}
