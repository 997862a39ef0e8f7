"""Opt-in (marker ``bazel``, deselected by default in pytest.ini): the Bazel build and tests,
offline with Debian's bazel-bootstrap, through scripts/bazel_check.sh. Run it with
``.venv/bin/python -m pytest -m bazel`` (it installs the Debian packages it needs)."""
import os
import subprocess

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.bazel
def test_bazel_build_and_test_offline():
    run = subprocess.run([os.path.join(ROOT, "scripts", "bazel_check.sh")], capture_output=True,
                         text=True, timeout=1800)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    for target in ("//:group_sparse_fc_driver", "//:nm_sparse_fc_driver", "//:smoke_test"):
        assert any(line.startswith(target) and "PASSED" in line for line in out.splitlines()), \
            (target, out[-3000:])
    assert "[bazel_check] OK" in out
