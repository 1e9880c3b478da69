"""Packing backups: zstd + age streaming round trips, and interop with Debian's `age` and `zstd` CLIs both
ways (files we encrypt, `age -d | zstd -d` reads; files `age` encrypts, we read)."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from etcdforge.backup import pack
from etcdforge.errors import BackupError


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        if os.environ.get("ETCDFORGE_REQUIRE_BACKUP") == "1":
            pytest.fail(f"{name} is required (ETCDFORGE_REQUIRE_BACKUP=1): apt-get install age zstd")
        pytest.skip(f"{name} is not installed (apt-get install age zstd)")
    return path


def payload(path: Path, mib: int = 3) -> bytes:
    data = b"".join(os.urandom(65536) + bytes(65536) for _ in range(mib * 8))
    path.write_bytes(data)
    return data


def keypair(tmp_path: Path) -> tuple[Path, str]:
    from pyrage import x25519

    ident = x25519.Identity.generate()
    key = tmp_path / "key.txt"
    key.write_text(f"# created for a test\n{ident}\n")
    return key, str(ident.to_public())


def test_round_trip_plain_and_encrypted(tmp_path: Path) -> None:
    raw = payload(tmp_path / "raw")
    key, public = keypair(tmp_path)
    size, digest = pack.pack(tmp_path / "raw", tmp_path / "plain.zst")
    assert size == (tmp_path / "plain.zst").stat().st_size < len(raw)
    assert digest == hashlib.sha256((tmp_path / "plain.zst").read_bytes()).hexdigest()
    assert pack.unpack(tmp_path / "plain.zst", tmp_path / "back1", encrypted=False) == digest
    assert (tmp_path / "back1").read_bytes() == raw

    recipients = pack.recipients_from([public], tmp_path)
    size2, digest2 = pack.pack(tmp_path / "raw", tmp_path / "enc.zst.age", recipients)
    assert size2 == (tmp_path / "enc.zst.age").stat().st_size
    assert (tmp_path / "enc.zst.age").read_bytes()[:21] == b"age-encryption.org/v1"
    identities = pack.identities_from([key])
    assert pack.unpack(tmp_path / "enc.zst.age", tmp_path / "back2", identities, encrypted=True) == digest2
    assert (tmp_path / "back2").read_bytes() == raw
    # stored files are private, and no temporary file is left behind
    assert (tmp_path / "enc.zst.age").stat().st_mode & 0o777 == 0o600
    assert not list(tmp_path.glob("*.part"))


def test_the_age_cli_reads_what_we_write(tmp_path: Path) -> None:
    age, zstd = require_tool("age"), require_tool("zstd")
    raw = payload(tmp_path / "raw")
    key, public = keypair(tmp_path)
    recipients_file = tmp_path / "recipients.txt"
    recipients_file.write_text(f"# the backup key\n{public}\n")
    pack.pack(tmp_path / "raw", tmp_path / "b.zst.age", pack.recipients_from(["recipients.txt"], tmp_path))
    decrypted = subprocess.run(
        [age, "-d", "-i", str(key), str(tmp_path / "b.zst.age")], capture_output=True, check=True
    ).stdout
    plain = subprocess.run([zstd, "-d", "-c"], input=decrypted, capture_output=True, check=True).stdout
    assert plain == raw


def test_we_read_what_the_age_cli_writes(tmp_path: Path) -> None:
    age, zstd = require_tool("age"), require_tool("zstd")
    raw = payload(tmp_path / "raw")
    subprocess.run(
        [require_tool("age-keygen"), "-o", str(tmp_path / "k.txt")], capture_output=True, check=True
    )
    public = subprocess.run(
        [require_tool("age-keygen"), "-y", str(tmp_path / "k.txt")],
        capture_output=True,
        check=True,
        text=True,
    ).stdout.strip()
    subprocess.run([zstd, "-q", "-f", str(tmp_path / "raw"), "-o", str(tmp_path / "raw.zst")], check=True)
    subprocess.run(
        [age, "-r", public, "-o", str(tmp_path / "cli.age"), str(tmp_path / "raw.zst")], check=True
    )
    ids = pack.identities_from([tmp_path / "k.txt"])
    pack.unpack(tmp_path / "cli.age", tmp_path / "out", ids, encrypted=True)
    assert (tmp_path / "out").read_bytes() == raw


def test_wrong_key_or_damage_is_refused_and_leaves_nothing(tmp_path: Path) -> None:
    payload(tmp_path / "raw", mib=1)
    _, public = keypair(tmp_path)
    (tmp_path / "other").mkdir()
    other_key, _ = keypair(tmp_path / "other")
    pack.pack(tmp_path / "raw", tmp_path / "b.age", pack.recipients_from([public], tmp_path))
    with pytest.raises(BackupError, match="cannot decrypt or decompress"):
        pack.unpack(tmp_path / "b.age", tmp_path / "out", pack.identities_from([other_key]), encrypted=True)
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob("out*"))
    with pytest.raises(BackupError, match="give the age identity"):
        pack.unpack(tmp_path / "b.age", tmp_path / "out", encrypted=True)

    pack.pack(tmp_path / "raw", tmp_path / "p.zst")
    data = bytearray((tmp_path / "p.zst").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "p.zst").write_bytes(bytes(data))
    with pytest.raises(BackupError, match="cannot decrypt or decompress"):
        pack.unpack(tmp_path / "p.zst", tmp_path / "out", encrypted=False)
    assert not (tmp_path / "out").exists()


def test_bad_recipients_are_refused_with_one_line(tmp_path: Path) -> None:
    with pytest.raises(BackupError, match="not an age X25519 recipient"):
        pack.recipients_from(["age1notakey"], tmp_path)
    with pytest.raises(BackupError, match="cannot read age recipients file"):
        pack.recipients_from(["missing.txt"], tmp_path)
    (tmp_path / "empty.txt").write_text("# nobody\n")
    with pytest.raises(BackupError, match="no age recipient"):
        pack.recipients_from(["empty.txt"], tmp_path)
    (tmp_path / "k.txt").write_text("nothing here\n")
    with pytest.raises(BackupError, match="no age identity"):
        pack.identities_from([tmp_path / "k.txt"])
