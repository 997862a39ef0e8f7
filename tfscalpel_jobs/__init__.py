"""Jobs that need both sides: the training side (``tfscalpel``) and the deployment side
(``tflite_export``). This package sits above both; neither imports it (docs/ARCHITECTURE.md).

- :mod:`tfscalpel_jobs.main`: the main job (LeNet-300-100 on MNIST: train, prune with SIMD
  groups, strip, export, measure): ``python -m tfscalpel_jobs.main``.
"""
