"""Convert a stripped Keras model to a group-sparse `.tflite` and a per-layer report.

A pruned model saved before `tfscalpel.strip` is stripped first (the progress says so).

    python -m tflite_export.convert --model pruned.keras --output model.tflite \\
        [--target x86-avx2] [--quantize none|int8] [--representative_data calib.npz] \\
        [--int8_io] [--report report.json] [--format tflite|c_array]

With `--format c_array`, `--output` is an existing directory that receives `model_data.cc/.h`
(the model as a 16-byte-aligned C array for TFLite Micro), and the flash bytes per layer and an
arena estimate are printed (`tflite_export.c_array`).

Prints progress to stdout and the per-layer table at the end. On any failure it prints one line
`error: ...` to stderr and exits with status 1 (2 for bad flags); the output and report files are
written atomically, so they are either complete or absent, never partial.
"""
from __future__ import annotations

import os
import sys
import warnings

from absl import app, flags, logging

# TensorFlow's C++ start-up chatter would bury the progress lines; set before TF is imported.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "Path to the Keras model (.keras), stripped or not "
                    "(a pruned model is stripped first).")
flags.DEFINE_string("output", None, "Path of the .tflite to write.")
flags.DEFINE_string("target", "x86-avx2", "Target profile name, or a path to a JSON profile.")
flags.DEFINE_enum("quantize", "none", ["none", "int8"], "float32 (none) or full int8.")
flags.DEFINE_string(
    "representative_data", None,
    "int8 calibration inputs: a .npy (one input, samples on axis 0) or .npz (one array per input).",
)
flags.DEFINE_bool("int8_io", False, "With int8: int8 model inputs/outputs instead of float32.")
flags.DEFINE_string("report", None, "Optional path of a JSON per-layer report.")
flags.DEFINE_enum("format", "tflite", ["tflite", "c_array"],
                  "tflite: --output is the .tflite file; c_array: --output is a directory that "
                  "receives model_data.cc/.h for TFLite Micro.")


class CliError(Exception):
    """A user-facing failure: printed as one line, exit status 1."""


def _progress(msg: str) -> None:
    print(f"[convert] {msg}", flush=True)


def _check_paths() -> None:
    if not FLAGS.model:
        raise CliError("--model is required (a .keras file)")
    if not FLAGS.output:
        raise CliError("--output is required (the .tflite to write)")
    if not os.path.isfile(FLAGS.model):
        raise CliError(f"--model: no such file: {FLAGS.model}")
    _check_model_file(FLAGS.model)
    if FLAGS.format == "c_array" and not os.path.isdir(FLAGS.output):
        raise CliError(f"--output: with --format=c_array, a directory that exists: {FLAGS.output}")
    for flag in ("output", "report"):
        path = getattr(FLAGS, flag)
        if path and not os.path.isdir(os.path.dirname(os.path.abspath(path))):
            raise CliError(f"--{flag}: directory does not exist: {os.path.dirname(os.path.abspath(path))}")
    if FLAGS.quantize == "int8" and not FLAGS.representative_data:
        raise CliError("--quantize=int8 needs --representative_data (a .npy or .npz of inputs)")
    if FLAGS.quantize == "none" and FLAGS.int8_io:
        raise CliError("--int8_io needs --quantize=int8")
    if FLAGS.representative_data and not os.path.isfile(FLAGS.representative_data):
        raise CliError(f"--representative_data: no such file: {FLAGS.representative_data}")


def _load_representative(path: str):
    import numpy as np

    try:
        data = np.load(path, allow_pickle=False)
    except Exception as e:
        raise CliError(f"--representative_data: cannot read {path}: {e}") from None
    if isinstance(data, np.ndarray):
        return data
    with data:  # .npz: keep the file order (arr_0, arr_1, ... or input names)
        return {k: data[k] for k in data.files}


def _check_model_file(path: str) -> None:
    """Refuse a file that is neither a ``.keras`` zip archive nor a legacy HDF5 ``.h5`` one
    (Keras itself says "File not found" for a ``.keras`` name that is not a zip)."""
    import zipfile

    if zipfile.is_zipfile(path):
        return
    with open(path, "rb") as f:
        if f.read(8) == b"\x89HDF\r\n\x1a\n":
            return
    raise CliError(f"--model: {path} is not a Keras model file: a .keras file is a zip archive "
                   "written by model.save('name.keras') (or a legacy .h5 file); this one is "
                   "neither (truncated, or another format)")


def _load_model(path: str):
    """Load ``path`` with tfscalpel's layers registered; a pruned model that was saved before
    ``tfscalpel.strip`` is stripped here, with a progress line saying so."""
    import keras

    import tfscalpel  # registers the pruned layers, MaskLayer and schedules with Keras

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:
        raise CliError(f"--model: cannot load {path}: {type(e).__name__}: {e}") from None
    if tfscalpel.pruned_layers(model) or tfscalpel.mask_layers(model):
        _progress("the model is pruned but not stripped: stripping it (tfscalpel.strip: masks "
                  "baked in, dead nodes removed); strip before saving to skip this step")
        try:
            model = tfscalpel.strip(model)
        except ValueError as e:
            raise CliError(f"--model: cannot strip {path}: {e}") from None
    return model


def _run() -> None:
    _check_paths()
    from tflite_export import cost_model, exporter  # heavy imports (TensorFlow) only after flags are valid

    try:  # a target without a cost model (gpu-ampere) goes by name; the others by their profile
        target = FLAGS.target if exporter.fixed_format(FLAGS.target) else cost_model.load(FLAGS.target)
    except ValueError as e:
        raise CliError(f"--target: {e}") from None
    representative = None
    if FLAGS.quantize == "int8":
        representative = _load_representative(FLAGS.representative_data)

    _progress(f"loading {FLAGS.model}")
    model = _load_model(FLAGS.model)

    from tflite_export.atomic import write_atomic

    quantize = None if FLAGS.quantize == "none" else "int8"
    _progress(f"converting ({quantize or 'float32'}) and rewriting for {getattr(target, 'name', target)}")
    result = exporter.export(model, target=target, quantize=quantize,
                             representative_data=representative, output=None, int8_io=FLAGS.int8_io)
    # Report first, model last: the model file only appears once everything has succeeded.
    if FLAGS.report:
        write_atomic(FLAGS.report, result.report.to_json())
        _progress(f"wrote report {FLAGS.report}")
    if FLAGS.format == "c_array":
        from tflite_export import c_array

        paths = c_array.write(result.model_bytes, FLAGS.output)
        _progress(f"wrote {' and '.join(paths)} ({len(result.model_bytes)} bytes of model)")
        print(result.report.table(), flush=True)
        print(c_array.flash_table(result.report, result.model_bytes), flush=True)
        print(c_array.arena_estimate(result.model_bytes), flush=True)
        return
    write_atomic(FLAGS.output, result.model_bytes)
    _progress(f"wrote {FLAGS.output} ({len(result.model_bytes)} bytes)")
    print(result.report.table(), flush=True)


def main(argv) -> int:
    # absl turns Python logging up to INFO; the converter then logs every SavedModel step.
    logging.set_verbosity(logging.WARNING)
    warnings.filterwarnings("ignore", module="tensorflow")
    if len(argv) > 1:
        print(f"error: unexpected arguments {argv[1:]}", file=sys.stderr)
        return 1
    try:
        _run()
    except CliError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    except Exception as e:  # anything else still ends in one clear line and a failure status
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        print(f"error: {type(e).__name__}: {msg}", file=sys.stderr)
        return 1
    return 0


def _parse_flags(argv):
    # absl's default prints a multi-line usage hint; one clear line is easier to act on.
    try:
        return FLAGS(argv)
    except flags.Error as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)


def run() -> None:
    """Console entry point."""
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run()
