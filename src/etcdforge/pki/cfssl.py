"""cfssl JSON in and out: ``ca-config.json`` signing configs and CSR JSON (cfssl-compat.md B1/B2).

Reading follows cfssl's rules exactly where they decide whether a file is valid, and is stricter
only where cfssl is silently surprising:

* keys are matched case-insensitively and unknown keys are ignored, as Go's ``encoding/json``
  does, but every unknown key (and every known key whose effect etcdforge does not reproduce) is
  reported in ``warnings``, so a typo such as ``"usage"`` does not pass unnoticed;
* every local profile, ``default`` included, needs ``expiry``; a named profile needs at least one
  known usage; a missing ``signing`` is an error; durations are Go durations (no ``d``);
* :meth:`CfsslConfig.profile` raises on an unknown profile name instead of cfssl's silent fallback
  to ``default``.

Writing produces JSON that cfssl accepts and that makes it issue certificates equivalent to ours
(same usages, SANs and lifetime), for ``etcdforge pki export-cfssl``.

The loaders read one file when given a path; everything else is pure.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from email.utils import parseaddr
from pathlib import Path
from typing import Any

from etcdforge.durations import format_go_duration, parse_go_duration
from etcdforge.errors import CfsslConfigError, PkiError
from etcdforge.pki.model import (
    DEFAULT_USAGES,
    KNOWN_USAGES,
    CaSettings,
    CertRequest,
    KeySpec,
    Profile,
    SubjectNames,
)

#: SigningProfile keys etcdforge honours.
_PROFILE_USED = ("usages", "expiry")
#: SigningProfile keys cfssl knows but whose effect etcdforge does not reproduce (warned when set).
_PROFILE_IGNORED = (
    "backdate", "not_before", "not_after", "ca_constraint", "issuer_urls", "ocsp_url", "crl_url",
    "ocsp_no_check", "name_whitelist", "copy_extensions", "allowed_extensions", "auth_key",
    "prev_auth_key", "remote", "auth_remote", "ct_log_servers", "lint_error_level", "ignored_lints",
    "ignored_lint_sources", "cert_store", "policies",
)  # fmt: skip
_CSR_KEYS = (
    "cn",
    "hosts",
    "key",
    "names",
    "ca",
    "serialnumber",
    "crl_url",
    "delegation_enabled",
    "extensions",
)
_NAME_KEYS = ("c", "st", "l", "o", "ou", "serialnumber", "e", "oid")
_URI_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*:")

#: cfssl's ``DefaultConfig()``, used when ca-config.json has no ``signing.default``.
_CFSSL_DEFAULT_USAGES = ("signing", "key encipherment", "server auth", "client auth")
_CFSSL_DEFAULT_EXPIRY = "8760h"
#: cfssl's default CA lifetime for ``gencert -initca`` without ``ca.expiry`` (B3).
CFSSL_DEFAULT_CA_EXPIRY = timedelta(hours=43800)
#: cfssl's ``NewKeyRequest()``: ECDSA P-256 when a CSR has no ``key``.
_DEFAULT_KEY = KeySpec("ecdsa", 256)
_NO_NAMES = SubjectNames()


@dataclass(frozen=True)
class CfsslProfile:
    """The parts of a cfssl signing profile etcdforge honours."""

    usages: tuple[str, ...]
    expiry: timedelta
    remote: str | None = None

    @property
    def known_usages(self) -> tuple[str, ...]:
        return tuple(u for u in self.usages if u in KNOWN_USAGES)


@dataclass(frozen=True)
class CfsslConfig:
    """A loaded ``ca-config.json``: the default profile, the named ones, and what was ignored."""

    default: CfsslProfile
    profiles: Mapping[str, CfsslProfile]
    origin: str = "ca-config.json"
    warnings: tuple[str, ...] = ()

    def profile(self, name: str | None) -> CfsslProfile:
        """The profile ``name`` (``None`` = default); unlike cfssl, an unknown name is an error."""
        prof = self.default if name is None else self.profiles.get(name)
        label = "default" if name is None else name
        if prof is None:
            have = ", ".join(sorted(self.profiles)) or "none"
            raise CfsslConfigError(
                f"{self.origin}: no profile {name!r} (profiles: {have}; names are case-sensitive)",
                hint="pick one of the listed profiles or add it under signing.profiles",
            )
        if prof.remote is not None:
            raise CfsslConfigError(
                f"{self.origin}: profile {label!r} signs remotely via {prof.remote!r}",
                hint="etcdforge signs locally; use a profile without 'remote'",
            )
        if not prof.known_usages:
            # cfssl only notices this at signing time: "Invalid policy: no key usage available".
            raise CfsslConfigError(
                f"{self.origin}: profile {label!r}: Invalid policy: no key usage available",
                hint='add "usages", e.g. ["signing", "key encipherment", "client auth"]',
            )
        return prof


@dataclass(frozen=True)
class CsrSpec:
    """A loaded cfssl CSR JSON."""

    cn: str
    ip_sans: tuple[str, ...] = ()
    dns_sans: tuple[str, ...] = ()
    key: KeySpec = _DEFAULT_KEY
    subject: SubjectNames = _NO_NAMES
    ca_expiry: timedelta | None = None
    warnings: tuple[str, ...] = field(default=(), compare=False)

    def to_request(
        self, name: str, profile: Profile, expiry: timedelta, usages: tuple[str, ...] | None = None
    ) -> CertRequest:
        return CertRequest(
            name=name, cn=self.cn, profile=profile, ip_sans=self.ip_sans, dns_sans=self.dns_sans,
            key=self.key, expiry=expiry, subject=self.subject, usages=usages,
        )  # fmt: skip

    def to_ca_settings(self) -> CaSettings:
        """CA settings as ``gencert -initca`` would use them (default lifetime 43800h)."""
        return CaSettings(
            cn=self.cn, subject=self.subject, key=self.key, expiry=self.ca_expiry or CFSSL_DEFAULT_CA_EXPIRY
        )


def apply_profile(req: CertRequest, profile: CfsslProfile) -> CertRequest:
    """``req`` with the usages and expiry of a user's cfssl profile (unknown usage names dropped)."""
    return replace(req, usages=profile.known_usages, expiry=profile.expiry)


# ---------------------------------------------------------------------------------------------- read


def load_ca_config(source: bytes | Path, *, origin: str = "ca-config.json") -> CfsslConfig:
    """Load and validate a cfssl ``ca-config.json`` by cfssl's rules (module docstring).

    ``origin`` names bytes in messages (a path names itself)."""
    origin, doc = _load_json(source, origin)
    warnings: list[str] = []
    top = _object(doc, origin, "top level")
    top_f = _fields(top, ("signing", "auth_keys", "remotes", "ocsp"), origin, "", warnings)
    signing_raw = top_f.get("signing")
    if signing_raw is None:
        raise CfsslConfigError(
            f'{origin}: No "signing" field present',
            hint='wrap the profiles in {"signing": {"default": {...}, "profiles": {...}}}',
        )
    signing = _fields(
        _object(signing_raw, origin, "signing"), ("default", "profiles"), origin, "signing.", warnings
    )
    default_raw = signing.get("default")
    if default_raw is None:
        default = CfsslProfile(_CFSSL_DEFAULT_USAGES, parse_go_duration(_CFSSL_DEFAULT_EXPIRY))
    else:
        default = _profile(default_raw, origin, "default", warnings)
    profiles: dict[str, CfsslProfile] = {}
    for name, raw in _object(signing.get("profiles") or {}, origin, "signing.profiles").items():
        profiles[name] = _profile(raw, origin, name, warnings)
    for name, prof in profiles.items():
        # cfssl's validProfile: a named local profile needs a known usage ("invalid configuration").
        if prof.remote is None and not prof.known_usages:
            got = ", ".join(repr(u) for u in prof.usages) or "none"
            raise CfsslConfigError(
                f"{origin}: invalid configuration: profile {name!r} has no known usage (got {got})",
                hint="use cfssl usage names such as 'signing', 'key encipherment', 'client auth'",
            )
    return CfsslConfig(default=default, profiles=profiles, origin=origin, warnings=tuple(warnings))


def load_csr(source: bytes | Path, *, origin: str = "csr.json") -> CsrSpec:
    """Load a cfssl CSR JSON: CN, hosts split into IP/DNS SANs, key (default ECDSA P-256), names."""
    origin, doc = _load_json(source, origin)
    warnings: list[str] = []
    top = _fields(_object(doc, origin, "top level"), _CSR_KEYS, origin, "", warnings)
    for extra in ("serialnumber", "crl_url", "delegation_enabled", "extensions"):
        if top.get(extra):
            warnings.append(f"{origin}: {extra!r} is ignored by etcdforge")
    cn = _string(top.get("cn", ""), origin, "CN")
    ips: list[str] = []
    dns: list[str] = []
    for host in _string_list(top.get("hosts"), origin, "hosts"):
        kind = classify_host(host)
        if kind == "ip":
            ips.append(host)
        elif kind == "dns" and ":" in host:
            # cfssl would make "10.0.0.1:2380" a DNS SAN that can never match; say what was meant.
            raise CfsslConfigError(
                f"{origin}: host {host!r} is not a host name or IP", hint="list the host without the port"
            )
        elif kind == "dns":
            dns.append(host)
        else:
            hint = "etcd only needs DNS and IP SANs; remove it from hosts"
            if kind == "uri" and ":" in host and "//" not in host:
                hint = "cfssl reads 'host:port' as a URI; list the host without the port"
            label = "an email" if kind == "email" else "a URI"
            raise CfsslConfigError(f"{origin}: host {host!r} would be {label} SAN", hint=hint)
    key = _key(top.get("key"), origin, warnings)
    subject = _names(top.get("names"), origin, warnings)
    ca_expiry: timedelta | None = None
    if top.get("ca") is not None:
        ca = _fields(_object(top["ca"], origin, "ca"), ("pathlen", "pathlenzero", "expiry", "backdate"),
                     origin, "ca.", warnings)  # fmt: skip
        if ca.get("expiry"):
            ca_expiry = _duration(ca["expiry"], origin, "ca.expiry")
        for ignored in ("pathlen", "pathlenzero", "backdate"):
            if ca.get(ignored):
                warnings.append(f"{origin}: ca.{ignored} is ignored by etcdforge")
    return CsrSpec(cn=cn, ip_sans=tuple(ips), dns_sans=tuple(dns), key=key, subject=subject,
                   ca_expiry=ca_expiry, warnings=tuple(warnings))  # fmt: skip


def classify_host(host: str) -> str:
    """cfssl's host → SAN rule (B2): ``"ip"``, ``"email"``, ``"uri"`` or ``"dns"``, in that order."""
    try:
        # Go's net.ParseIP takes no zone and no brackets; ipaddress agrees on what it accepts here.
        ipaddress.ip_address(host)
        return "ip"
    except ValueError:
        pass
    if "@" in host and "@" in parseaddr(host)[1]:
        return "email"
    if host.startswith("/") or _URI_SCHEME.match(host):
        return "uri"
    return "dns"


def _load_json(source: bytes | Path, default_name: str) -> tuple[str, Any]:
    if isinstance(source, Path):
        origin = str(source)
        try:
            data = source.read_bytes()
        except OSError as exc:
            raise CfsslConfigError(f"cannot read {origin}: {exc.strerror or exc}") from exc
    else:
        origin, data = default_name, source
    try:
        doc: Any = json.loads(data)
    except json.JSONDecodeError as exc:
        raise CfsslConfigError(
            f"{origin}:{exc.lineno}:{exc.colno}: malformed JSON: {exc.msg}",
            hint="fix the JSON syntax at that line and column",
        ) from exc
    except UnicodeDecodeError as exc:
        raise CfsslConfigError(f"{origin}: not UTF-8 text ({exc.reason})") from exc
    return origin, doc


def _object(value: Any, origin: str, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise CfsslConfigError(f"{origin}: {where} must be a JSON object, got {type(value).__name__}")
    return value


def _fields(obj: dict[str, Any], known: tuple[str, ...], origin: str, where: str,
            warnings: list[str]) -> dict[str, Any]:  # fmt: skip
    """Match keys case-insensitively like Go (later duplicates win); warn about unknown keys."""
    out: dict[str, Any] = {}
    for key, value in obj.items():
        low = key.lower()
        if low in known:
            out[low] = value
        else:
            warnings.append(f"{origin}: unknown key {where}{key!r} ignored (cfssl ignores it silently)")
    return out


def _profile(raw: Any, origin: str, name: str, warnings: list[str]) -> CfsslProfile:
    where = f"signing.{'default' if name == 'default' else 'profiles.' + name}."
    f = _fields(_object(raw, origin, where[:-1]), _PROFILE_USED + _PROFILE_IGNORED, origin, where, warnings)
    for key in _PROFILE_IGNORED:
        if f.get(key):
            warnings.append(f"{origin}: {where}{key} is not applied by etcdforge")
    remote = f.get("remote") or (f.get("auth_remote") or {}).get("remote") or None
    usages = _string_list(f.get("usages"), origin, where + "usages")
    for u in usages:
        if u not in KNOWN_USAGES:
            warnings.append(f"{origin}: {where}usages: unknown usage {u!r} ignored")
    if remote is not None:
        # Remote profiles skip local validation in cfssl; we refuse to use them (see profile()).
        return CfsslProfile(usages=usages, expiry=timedelta(0), remote=str(remote))
    expiry_text = f.get("expiry")
    if not expiry_text:
        raise CfsslConfigError(
            f"{origin}: profile {name!r}: empty expiry string",
            hint='every profile, default included, needs "expiry", e.g. "8760h"',
        )
    return CfsslProfile(usages=usages, expiry=_duration(expiry_text, origin, where + "expiry"))


def _duration(value: Any, origin: str, where: str) -> timedelta:
    text = _string(value, origin, where)
    try:
        td: timedelta = parse_go_duration(text)
    except CfsslConfigError as exc:
        raise CfsslConfigError(f"{origin}: {where}: {exc.message}", hint=exc.hint) from exc
    if td <= timedelta(0):
        raise CfsslConfigError(f"{origin}: {where}: must be positive, got {text!r}", hint="e.g. 8760h")
    return td


def _string(value: Any, origin: str, where: str) -> str:
    if not isinstance(value, str):
        raise CfsslConfigError(f"{origin}: {where} must be a string, got {json.dumps(value)}")
    return value


def _string_list(value: Any, origin: str, where: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise CfsslConfigError(f"{origin}: {where} must be a list of strings, got {json.dumps(value)}")
    return tuple(value)


def _key(raw: Any, origin: str, warnings: list[str]) -> KeySpec:
    if raw is None:
        return _DEFAULT_KEY
    f = _fields(_object(raw, origin, "key"), ("algo", "size"), origin, "key.", warnings)
    algo = _string(f.get("algo", ""), origin, "key.algo")
    size = f.get("size", 0)
    if not isinstance(size, int) or isinstance(size, bool):
        raise CfsslConfigError(f"{origin}: key.size must be an integer, got {json.dumps(size)}")
    if algo not in ("rsa", "ecdsa"):
        raise CfsslConfigError(f"{origin}: invalid algorithm {algo!r}", hint='use "ecdsa" or "rsa"')
    try:
        return KeySpec("rsa" if algo == "rsa" else "ecdsa", size)
    except PkiError as exc:
        raise CfsslConfigError(f"{origin}: {exc.message}", hint=exc.hint) from exc


def _names(raw: Any, origin: str, warnings: list[str]) -> SubjectNames:
    """Merge ``names`` entries; a field given twice with different values cannot be represented."""
    if raw is None:
        return SubjectNames()
    if not isinstance(raw, list):
        raise CfsslConfigError(f"{origin}: names must be a list of objects")
    merged: dict[str, str] = {}
    for i, entry in enumerate(raw):
        f = _fields(_object(entry, origin, f"names[{i}]"), _NAME_KEYS, origin, f"names[{i}].", warnings)
        for key in ("serialnumber", "e", "oid"):
            if f.get(key):
                warnings.append(f"{origin}: names[{i}].{key} is ignored by etcdforge")
        for key in ("c", "st", "l", "o", "ou"):
            value = _string(f.get(key, ""), origin, f"names[{i}].{key.upper()}")
            if not value:
                continue
            if merged.get(key, value) != value:
                raise CfsslConfigError(
                    f"{origin}: names give {key.upper()} twice ({merged[key]!r}, {value!r})",
                    hint="etcdforge supports one value per attribute; keep one",
                )
            merged[key] = value
    return SubjectNames(C=merged.get("c"), ST=merged.get("st"), L=merged.get("l"), O=merged.get("o"),
                        OU=merged.get("ou"))  # fmt: skip


# --------------------------------------------------------------------------------------------- write


def profile_for(req: CertRequest) -> CfsslProfile:
    """The cfssl profile that gives a certificate ``req``'s usages and lifetime."""
    return CfsslProfile(usages=req.effective_usages, expiry=req.expiry)


def ca_config_json(profiles: Mapping[str, CfsslProfile], default: CfsslProfile | None = None) -> bytes:
    """A ``ca-config.json`` cfssl loads; ``default`` falls back to the server profile's settings."""
    if default is None:
        default = CfsslProfile(usages=DEFAULT_USAGES["server"], expiry=timedelta(hours=8760))

    def one(p: CfsslProfile) -> dict[str, Any]:
        return {"usages": list(p.usages), "expiry": format_go_duration(p.expiry)}

    doc = {"signing": {"default": one(default), "profiles": {n: one(p) for n, p in profiles.items()}}}
    return (json.dumps(doc, indent=2) + "\n").encode()


def csr_json(req: CertRequest) -> bytes:
    """A CSR JSON from which ``cfssl gencert`` makes a certificate equivalent to ours."""
    doc: dict[str, Any] = {"CN": req.cn, "hosts": [*req.dns_sans, *req.ip_sans]}
    doc["key"] = {"algo": req.key.algo, "size": req.key.size}
    names = _names_json(req.subject)
    if names:
        doc["names"] = [names]
    return (json.dumps(doc, indent=2) + "\n").encode()


def ca_csr_json(settings: CaSettings) -> bytes:
    """A CSR JSON for ``cfssl gencert -initca`` that reproduces a CA made from ``settings``."""
    doc: dict[str, Any] = {"CN": settings.cn, "key": {"algo": settings.key.algo, "size": settings.key.size}}
    names = _names_json(settings.subject)
    if names:
        doc["names"] = [names]
    doc["ca"] = {"expiry": format_go_duration(settings.expiry)}
    return (json.dumps(doc, indent=2) + "\n").encode()


def _names_json(s: SubjectNames) -> dict[str, str]:
    pairs = (("C", s.C), ("ST", s.ST), ("L", s.L), ("O", s.O), ("OU", s.OU))
    return {k: v for k, v in pairs if v}
