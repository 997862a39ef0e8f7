"""tflite_export: TFLite export, group-sparse kernels and the host runtime for tfscalpel models."""

# The exporter imports TensorFlow; resolve its names lazily so that importing the package (e.g.
# only for the runtime) stays light. The module is `exporter`, not `export`, so that importing
# it can never shadow the `export` function as a package attribute.
_EXPORTER_NAMES = {
    "export": "tflite_export.exporter",
    "rewrite_tflite": "tflite_export.exporter",
    "ExportResult": "tflite_export.exporter",
    "ExportReport": "tflite_export.report",
    "LayerReport": "tflite_export.report",
    "CostModel": "tflite_export.cost_model",
    "convert_keras": "tflite_export.converter",
    "check_nm": "tflite_export.check",
}


def __getattr__(name):
    module = _EXPORTER_NAMES.get(name)
    if module is None:
        raise AttributeError(f"module 'tflite_export' has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(module), name)
