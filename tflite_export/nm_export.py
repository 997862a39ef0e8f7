"""2:4 export for sparse tensor cores: ``export_nm`` / ``rewrite_nm`` (FORMAT.md, TFS_NM_SPARSE_FC)::

    result = export_nm(stripped_model, output="model_2_4.tflite")           # float32
    result = export_nm(stripped_model, quantize="int8", representative_data=x)
    print(result)                                                           # per-layer table

The format itself (eligibility, encoding, kernel binding) is ``tflite_export.formats.nm``; the
rewrite is the exporter's one loop. A layer stays the dense builtin, with the format's reason in
the report, when it cannot leave it, when ``in % 4 != 0``, or when its weights are not 2:4.
"""
from tflite_export.exporter import export_nm, rewrite_nm
from tflite_export.formats.nm import decode_2_4, encode_2_4

__all__ = ["export_nm", "rewrite_nm", "encode_2_4", "decode_2_4"]
