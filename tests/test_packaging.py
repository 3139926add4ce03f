"""Release packaging: the cibuildwheel configuration, the wheel smoke test and the wheel script.

The fast tests check that the configuration names what a release needs and that the smoke test
(which cibuildwheel runs on every wheel) passes on the lossdiag under test. Building and
repairing a real wheel (scripts/build_wheel.sh, minutes) runs only with ``-m slow`` or
LOSSDIAG_SLOW=1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = os.path.join(ROOT, "scripts", "wheel_smoke_test.py")
BUILD_WHEEL = os.path.join(ROOT, "scripts", "build_wheel.sh")


def _pyproject() -> dict:
    try:
        import tomllib
    except ImportError:  # Python < 3.11
        tomllib = pytest.importorskip("tomli")
    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as fh:
        return tomllib.load(fh)


def test_cibuildwheel_config_builds_cpu_manylinux_wheels_and_smoke_tests_them() -> None:
    cfg = _pyproject()["tool"]["cibuildwheel"]
    linux = cfg["linux"]
    assert set(linux["archs"]) == {"x86_64", "aarch64"}
    assert "manylinux" in linux["manylinux-x86_64-image"]
    assert "manylinux" in linux["manylinux-aarch64-image"]
    assert "auditwheel repair" in linux.get("repair-wheel-command",
                                            "auditwheel repair -w {dest_dir} {wheel}")
    assert any("musllinux" in s for s in cfg["skip"])
    assert cfg["environment"]["LOSSDIAG_CUDA"] == "OFF"
    # every CPython the package supports
    assert {b.split("-")[0] for b in cfg["build"]} >= {"cp39", "cp310", "cp311", "cp312"}
    # the test command runs the smoke test on the installed wheel
    cmd = cfg["test-command"]
    assert "{project}/scripts/wheel_smoke_test.py" in cmd and "--expect-wheel" in cmd
    assert os.path.isfile(SMOKE)


def test_cibuildwheel_accepts_the_config() -> None:
    """cibuildwheel's own parser, where it is installed (it needs no Docker for this)."""
    exe = shutil.which("cibuildwheel")
    if exe is None:
        pytest.skip("cibuildwheel is not installed")
    r = subprocess.run([exe, "--print-build-identifiers", "--platform", "linux",
                        "--archs", "x86_64,aarch64", ROOT], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    ids = set(r.stdout.split())
    assert {"cp311-manylinux_x86_64", "cp311-manylinux_aarch64"} <= ids
    assert not any("musllinux" in i for i in ids)


def test_smoke_test_passes_on_this_lossdiag() -> None:
    r = subprocess.run([sys.executable, SMOKE], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("wheel smoke test passed")
    assert r.stdout.count("  ok  ") >= 10


def test_build_wheel_script_is_valid_bash() -> None:
    assert os.access(BUILD_WHEEL, os.X_OK)
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("no bash")
    subprocess.run([bash, "-n", BUILD_WHEEL], check=True)


@pytest.mark.slow
def test_build_wheel_script(tmp_path: object) -> None:
    """The whole release path on this machine: pip wheel, auditwheel repair, fresh-venv smoke."""
    r = subprocess.run(["bash", BUILD_WHEEL], capture_output=True, text=True, cwd=ROOT)
    assert r.returncode == 0, (r.stdout[-4000:], r.stderr[-4000:])
    assert "smoke test passed in a fresh venv" in r.stdout
    assert "libgomp" in r.stdout
