"""tfscalpel: hardware-aware pruning for Keras 3, with TFLite export and sparse kernels."""
import glob
import runpy

from setuptools import Extension, find_packages, setup

# The C kernels of TFS_GROUP_SPARSE_FC (core + LiteRT adapter) as one shared library, loaded with
# ctypes by tflite_export.kernels (no Python C API is used). SIMD paths are compiled per function
# with target attributes and chosen at run time, so no -mavx2 here: the library runs on any x86-64.
# The sources come from tflite_export/kernels/sources.py (one rule for the build, the tests and
# the firmware; run by path, so the package is not imported at build time).
_SOURCES = runpy.run_path("tflite_export/kernels/sources.py")
KERNELS = Extension(
    "tflite_export.kernels._tfs_kernels",
    sources=["tflite_export/kernels/" + s for s in _SOURCES["library_sources"]()],
    depends=sorted(glob.glob("tflite_export/kernels/*.h") + glob.glob("tflite_export/kernels/*.inc")),
    extra_compile_args=["-std=c11", "-O2", "-Wall", "-Wextra", "-Werror", "-fvisibility=default"],
    libraries=["m"],
)

setup(
    name="tfscalpel",
    version="0.1.0",
    description="Hardware-aware (Scalpel) pruning for Keras 3 with TFLite / TFLite Micro export",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(include=["tfscalpel", "tfscalpel.*", "tflite_export", "tflite_export.*",
                                    "tfscalpel_jobs", "tfscalpel_jobs.*"]),
    ext_modules=[KERNELS],
    package_data={"tflite_export.kernels": ["*.h", "*.c", "*.inc"]},
    install_requires=[
        "tensorflow==2.21.*",
        "numpy",
        "absl-py",
        "tensorboard",  # PruningSummaries writes TensorBoard scalars
        "flatbuffers",
        # Pinned: the C API signatures the runtime relies on changed between patch releases.
        "ai-edge-litert==2.3.0",
        "matplotlib",  # tfscalpel.report: training, per-layer and latency plots as PNG
    ],
    extras_require={
        "dev": ["pytest", "tensorflow-model-optimization", "tf-keras~=2.21.0",
                # tests/test_notebooks.py runs colab/*.ipynb headless
                "nbclient", "nbformat", "ipykernel",
                # tests/test_jax_backend.py runs the training side with KERAS_BACKEND=jax
                "jax[cpu]"],
        # Optional: only used lazily (its schedules are accepted) and as a benchmark baseline.
        "tfmot": ["tensorflow-model-optimization", "tf-keras"],
    },
)
