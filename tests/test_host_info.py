"""host_info: the CPU model, ISA features and fingerprint that benchmark headers and the host
measurement's cache key use."""
from tflite_export import host_info


def test_host_description_names_cpu_and_features():
    line = host_info.describe("avx2")
    assert line.startswith("CPU: ") and "ISA: " in line and line.endswith("kernel path: avx2")
    assert host_info.cpu_model() in line
    assert "kernels=" in host_info.fingerprint()
