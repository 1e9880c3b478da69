"""Security item 5: every command that writes a workspace takes its lock first, so two commands never
interleave their writes (here the lock is held by another open of the lock file, as another process's
command would hold it)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from etcdforge.cli import main
from etcdforge.verbs.up.run import workspace_lock
from etcdforge.workspace import Workspace

SPEC = """name: t
token: t-token
members:
  - {name: etcd1, address: 127.0.0.1}
"""


@pytest.mark.parametrize(
    "argv",
    [
        ("init", "--force", "--member", "etcd1=127.0.0.1"),
        ("adopt", "--force", "--member", "etcd1=127.0.0.1"),
        ("pki", "import-cfssl", "SRC"),
        ("member", "remove", "etcd1", "--yes"),
        ("member", "add", "etcd2"),
        ("member", "replace", "etcd1", "--yes"),
        ("pki", "renew", "--yes"),
        ("pki", "rotate-ca", "--yes"),
        ("apply", "--yes"),
        ("up",),
        ("down",),
        ("destroy", "--yes"),
    ],
)
def test_a_writer_refuses_while_another_command_holds_the_workspace(
    tmp_path: Path, argv: tuple[str, ...]
) -> None:
    directory = tmp_path / "ws"
    directory.mkdir()
    (directory / "cluster.yaml").write_text(SPEC)
    source = tmp_path / "src"
    source.mkdir()
    args = [a if a != "SRC" else str(source) for a in argv]
    with workspace_lock(Workspace(directory)):
        result = CliRunner().invoke(main, [*args, "--dir", str(directory)])
    assert result.exit_code != 0, result.output
    assert "another etcdforge command is working on" in result.stderr, result.stderr
    assert (directory / "cluster.yaml").read_text() == SPEC
