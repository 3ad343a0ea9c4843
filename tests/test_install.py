"""What each kind of install does: numpy alone works (star import included), torch-only
features name the fix, build_info is consistent, and a compiled core next to another torch
gives a clear error instead of undefined symbols."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

import svdlora
from helpers import HAS_COMPILED, orthonormality_defect, reconstruction_error, torch


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)


WITHOUT_TORCH = "import sys; sys.modules['torch'] = None\n"  # `import torch` then raises


def test_numpy_rsvd_works_in_every_install():
    A = np.random.default_rng(0).standard_normal((50, 30)) @ np.diag(0.5 ** np.arange(30))
    U, S, Vh = svdlora.rsvd(A, 5, seed=0, backend="numpy")
    s = np.linalg.svd(A, compute_uv=False)
    assert reconstruction_error(A, U, S, Vh) <= 1.01 * np.sqrt(np.sum(s[5:] ** 2))
    assert orthonormality_defect(U) < 1e-12


def test_star_import_without_torch():
    proc = run_python(WITHOUT_TORCH + "from svdlora import *\n"
                      "import numpy as np\n"
                      "print(type(rsvd(np.eye(6), 2, seed=0)).__name__, build_info()['compiled'])\n"
                      "assert 'SVDLoRALinear' not in dir()\n")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["SVDResult", "False"]


def test_star_import_with_this_install():
    proc = run_python("from svdlora import *\nprint(sorted(n for n in dir() if not n.startswith('_')))")
    assert proc.returncode == 0, proc.stderr
    names = eval(proc.stdout)
    assert "rsvd" in names and "spectral" in names
    assert ("SVDLoRALinear" in names) == (torch is not None)


def test_torch_only_features_name_the_fix_without_torch():
    proc = run_python(WITHOUT_TORCH + "import svdlora\n"
                      "try:\n    svdlora.SVDLoRALinear\nexcept svdlora.MissingExtensionError as e:\n"
                      "    print(e)\n")
    assert proc.returncode == 0, proc.stderr
    assert "needs PyTorch" in proc.stdout and "pip install" in proc.stdout


def test_build_info_is_consistent():
    info = svdlora.build_info()
    assert isinstance(info["compiled"], bool) and isinstance(info["cuda"], bool)
    if torch is None:
        assert info["torch_version"] is None and info["compiled"] is False
        assert "torch" in info["reason"] and info["adapter_ops"] is None
    else:
        kernel = "compiled" if info["compiled"] else "reference"
        assert info["adapter_ops"]["cpu"] == kernel and info["adapter_ops"]["other"] == "reference"
        assert info["adapter_ops"]["cuda"] == ("compiled" if info["cuda"] else "reference")
    if not info["compiled"]:
        assert info["backends"] == ["numpy"] and info["reason"]


@pytest.mark.skipif(HAS_COMPILED, reason="only meaningful without the compiled core")
def test_compiled_features_name_the_fix():
    with pytest.raises(svdlora.MissingExtensionError, match="pip install"):
        svdlora.rsvd(np.ones((4, 3)), 1, backend="compiled")


@pytest.mark.skipif(not HAS_COMPILED, reason="needs a build with the compiled core")
def test_another_torch_gives_a_clear_error_naming_the_torch_needed():
    from svdlora._extension import compiled_for_torch
    built = compiled_for_torch()
    assert built is not None and built.split("+")[0] == torch.__version__.split("+")[0]
    proc = run_python("import torch; torch.__version__ = '9.9.9'\nimport svdlora\n")
    assert proc.returncode != 0
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("svdlora._extension.MissingExtensionError:"), proc.stderr
    assert f"built for torch {built.split('+')[0]}" in last and "torch 9.9.9 is installed" in last
    assert f"torch=={built.split('+')[0]}" in last and "undefined symbol" not in proc.stderr


def test_torch_version_check_ignores_local_build_tags():
    from svdlora._extension import MissingExtensionError, check_torch_matches
    check_torch_matches("2.13.0+cpu", "2.13.0")
    check_torch_matches(None, "1.0")
    with pytest.raises(MissingExtensionError, match="built for torch 2.13.0.*torch==2.13.0"):
        check_torch_matches("2.13.0+cpu", "2.14.1+cu130")
