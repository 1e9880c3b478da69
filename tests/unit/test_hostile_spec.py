"""Every string the spec sends to a host, made hostile: ``plan`` and ``apply`` refuse it with one line
naming the field, before connecting anywhere.

The members are on loopback with SSH on a port nothing listens on: were the spec accepted, the run
would fail to connect (a different line), and no other address is ever tried.
"""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from etcdforge.cli import main

INJECTIONS = {
    "//": lambda v: "/" + v,
    "..": lambda v: v.rsplit("/", 1)[0] + "/../" + v.rsplit("/", 1)[-1] if "/" in v else v + "/..",
    "newline": lambda v: v + "\nUser=root",
    "%": lambda v: v + "%h",
    "$": lambda v: v + "$HOME",
    "space": lambda v: v + " x",
    "[/]": lambda v: v + "[/]",
}
#: (field path in the spec, a valid value, extra etcd settings it needs)
FIELDS = [
    ("etcd.data_dir", "/var/lib/etcd", {}),
    ("etcd.install_dir", "/usr/local/bin", {"source": "upload"}),
    ("etcd.binary", "/usr/bin/etcd", {}),
    ("etcd.version", "3.4.23", {}),
    ("etcd.auto_compaction_retention", "1h", {}),
    ("token", "prod-token", {}),
    ("name", "prod", {}),
    ("members[0].name", "etcd1", {}),
    ("members[0].dns_names[0]", "etcd1.example.internal", {}),
]


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
    return port  # closed again: nothing listens there


def spec_with(field: str, value: str, extra: dict[str, str]) -> dict[str, object]:
    spec: dict[str, object] = {
        "version": 1, "name": "prod", "mode": "hosts", "token": "prod-token",
        "ssh": {"port": closed_port(), "known_hosts": "known_hosts"},
        "etcd": dict(extra),
        "members": [{"name": "etcd1", "address": "127.0.0.61", "dns_names": ["etcd1.example.internal"]},
                    {"name": "etcd2", "address": "127.0.0.62"}, {"name": "etcd3", "address": "127.0.0.63"}],
    }  # fmt: skip
    if field.startswith("etcd."):
        spec["etcd"][field.removeprefix("etcd.")] = value  # type: ignore[index]
    elif field == "members[0].name":
        spec["members"][0]["name"] = value  # type: ignore[index]
    elif field == "members[0].dns_names[0]":
        spec["members"][0]["dns_names"] = [value]  # type: ignore[index]
    else:
        spec[field] = value
    return spec


@pytest.mark.parametrize("verb", [("plan",), ("apply", "--yes")])
@pytest.mark.parametrize("injection", list(INJECTIONS))
@pytest.mark.parametrize(("field", "valid", "extra"), FIELDS, ids=[f[0] for f in FIELDS])
def test_a_hostile_field_gives_one_line_and_touches_nothing(
    tmp_path: Path, verb: tuple[str, ...], injection: str, field: str, valid: str, extra: dict[str, str]
) -> None:
    hostile = INJECTIONS[injection](valid)
    assert hostile != valid
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(spec_with(field, hostile, extra)))
    result = CliRunner().invoke(main, [verb[0], "--dir", str(tmp_path), *verb[1:]])
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2, result.output
    assert len(lines) == 1, result.stderr
    assert "cluster.yaml is invalid" in lines[0]
    shown = field.replace("[0].dns_names[0]", "[0].dns_names")
    assert f"{shown}: " in lines[0] or (field == "members[0].name" and "members" in lines[0]), lines[0]
    written = sorted(p.name for p in tmp_path.iterdir() if p.name != ".lock")  # (apply locks first)
    assert written == ["cluster.yaml"]  # nothing written, no PKI


def test_the_same_spec_with_valid_values_gets_past_the_spec(tmp_path: Path) -> None:
    """The control case: valid values load, and the run fails only at the closed SSH port."""
    (tmp_path / "cluster.yaml").write_text(yaml.safe_dump(spec_with("etcd.data_dir", "/var/lib/etcd", {})))
    (tmp_path / "known_hosts").write_text("")
    result = CliRunner().invoke(main, ["plan", "--dir", str(tmp_path)])
    assert result.exit_code != 0
    assert "cluster.yaml is invalid" not in result.stderr, result.stderr
