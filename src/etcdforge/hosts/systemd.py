"""Parsers of systemd's own output, shared by the observation and the hosts runtime (pure)."""

from __future__ import annotations


def parse_systemctl_show(output: str) -> dict[str, str]:
    """``systemctl show -p A -p B`` output (KEY=VALUE lines) -> dict."""
    out: dict[str, str] = {}
    for line in output.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out
