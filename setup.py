"""tfscalpel: hardware-aware pruning for Keras 3, with TFLite export and sparse kernels."""
from setuptools import find_packages, setup

setup(
    name="tfscalpel",
    version="0.1.0",
    description="Hardware-aware (Scalpel) pruning for Keras 3 with TFLite / TFLite Micro export",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tfscalpel", "tfscalpel.*", "tflite_export", "tflite_export.*"]),
    install_requires=[
        "tensorflow==2.21.*",
        "numpy",
        "absl-py",
        "tensorboard",  # PruningSummaries writes TensorBoard scalars
        "flatbuffers",
        # Pinned: the C API signatures the runtime relies on changed between patch releases.
        "ai-edge-litert==2.3.0",
    ],
    extras_require={
        "dev": ["pytest", "tensorflow-model-optimization", "tf-keras~=2.21.0"],
        # Optional: only used lazily (its schedules are accepted) and as a benchmark baseline.
        "tfmot": ["tensorflow-model-optimization", "tf-keras"],
    },
)
