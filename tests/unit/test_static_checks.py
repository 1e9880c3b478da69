"""The house rules that tools can check: mypy --strict and ruff, on the whole tree; the public API."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


def test_mypy_strict_is_clean() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=300, check=False
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff")
    if ruff is None:
        pytest.fail("ruff is not installed (pip install -e '.[test]')")
    proc = subprocess.run(
        [ruff, "check", "src", "tests", "bench", "scripts"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_public_api_is_curated_and_importable() -> None:
    import etcdforge

    assert etcdforge.__all__ == sorted(etcdforge.__all__)
    for name in etcdforge.__all__:
        assert getattr(etcdforge, name) is not None, name
    with pytest.raises(AttributeError):
        etcdforge.not_a_thing  # noqa: B018
    # the stored list: a name added to or dropped from the public API is a reviewed change of this file
    stored = (Path(__file__).parent / "public_api.txt").read_text().split()
    assert etcdforge.__all__ == stored
    verbs = ("up", "down", "destroy", "make_plan", "apply", "member_add", "member_remove", "member_replace",
             "renew", "rotate_ca", "adopt")  # fmt: skip
    for verb in verbs:
        assert callable(getattr(etcdforge, verb)) and verb in stored


def test_cli_help_does_not_import_the_heavy_libraries() -> None:
    """`etcdforge --help` must start fast: no grpc, cryptography or pydantic on that path."""
    code = (
        "import sys; from click.testing import CliRunner; from etcdforge.cli import main; "
        "r = CliRunner().invoke(main, ['--help']); assert r.exit_code == 0, r.output; "
        "print(','.join(m for m in ('grpc', 'cryptography', 'pydantic') if m in sys.modules))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert proc.stdout.strip() == ""
    importlib.import_module("etcdforge.cli")
