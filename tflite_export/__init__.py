"""tflite_export: TFLite export, group-sparse kernels and the host runtime for tfscalpel models."""
