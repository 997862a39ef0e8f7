"""host_info: the CPU model, ISA features and fingerprint that benchmark headers and the host
measurement's cache key use."""
from tflite_export import host_info


def test_host_description_names_cpu_and_features():
    line = host_info.describe("avx2")
    assert line.startswith("CPU: ") and "ISA: " in line and line.endswith("kernel path: avx2")
    assert host_info.cpu_model() in line
    assert "kernels=" in host_info.fingerprint()


def test_registry_target_follows_machine_and_isa(monkeypatch):
    cases = [("x86_64", ["avx2", "fma", "avx512f", "avx512bw", "avx512vl"], "x86-avx512"),
             ("x86_64", ["avx2", "fma", "avx512f"], "x86-avx2"),  # AVX-512 F alone: no BW/VL kernels
             ("AMD64", ["avx2", "fma"], "x86-avx2"),
             ("x86_64", [], None),
             ("aarch64", ["asimd"], "arm-neon"),
             ("riscv64", [], None)]
    for machine, features, expected in cases:
        monkeypatch.setattr(host_info.platform, "machine", lambda m=machine: m)
        monkeypatch.setattr(host_info, "isa_features", lambda f=features: list(f))
        assert host_info.registry_target() == expected, (machine, features)
    import tfscalpel

    for name in ("x86-avx512", "x86-avx2", "arm-neon"):  # every answer is a registered target
        assert tfscalpel.get_target(name).group_size("int8") == 16
