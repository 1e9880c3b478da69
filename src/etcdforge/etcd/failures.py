"""Turn gRPC failures into etcdforge's error tree, naming the etcd condition precisely.

Role: the single place that knows etcd's error texts (``etcdserver: …``) and gRPC status codes.
Invariants:
- Every failure of an RPC surfaces as an :class:`~etcdforge.errors.EtcdError` subclass carrying the
  endpoint; nothing grpc-specific escapes.
- A transport failure (UNAVAILABLE / DEADLINE_EXCEEDED without an etcd text) becomes
  :class:`EtcdUnavailable`; TLS causes are diagnosed separately (:mod:`.tlsdiag`) because gRPC hides them.
- An etcd answer becomes :class:`EtcdServerError` (an :class:`EtcdRequestError`) with a ``reason``
  literal callers can branch on — except the "server cannot serve right now" answers (no leader, request
  timed out, leader changed), which become :class:`EtcdServerUnavailable` so fail-over logic treats them
  like an unreachable member.
- The mapping is pure (strings in, exception out) and unit-tested on recorded texts.
"""

from __future__ import annotations

from typing import Final, Literal

from etcdforge.errors import EtcdError, EtcdRequestError, EtcdTLSError, EtcdUnavailable

EtcdReason = Literal[
    "member_not_found",
    "member_exists",
    "peer_url_exists",
    "member_not_learner",
    "learner_not_ready",
    "too_many_learners",
    "learner_rpc_unsupported",
    "unhealthy_cluster",
    "not_leader",
    "bad_leader_transferee",
    "no_leader",
    "leader_changed",
    "request_timed_out",
    "compacted",
    "future_revision",
    "no_space",
    "corrupt",
    "permission_denied",
    "auth_not_enabled",
    "invalid_auth_token",
    "auth_failed",
    "auth_old_revision",
    "invalid_auth_mgmt",
    "root_user_not_exist",
    "root_role_not_granted",
    "user_not_found",
    "user_already_exists",
    "user_empty",
    "role_not_found",
    "role_already_exists",
    "role_empty",
    "role_not_granted",
    "permission_not_granted",
    "request_too_large",
    "too_many_requests",
    "member_removed",
    "other",
]

# Distinctive fragments of etcd's error texts (api/v3rpc/rpctypes), most specific first: "can only
# promote a learner member which is in sync" must win over "can only promote a learner member".
_REASON_FRAGMENTS: Final[tuple[tuple[str, EtcdReason], ...]] = (
    ("member not found", "member_not_found"),
    ("member id already exist", "member_exists"),
    ("peer urls already exists", "peer_url_exists"),
    ("can only promote a learner member which is in sync with leader", "learner_not_ready"),
    ("can only promote a learner member", "member_not_learner"),
    ("too many learner members in cluster", "too_many_learners"),
    ("rpc not supported for learner", "learner_rpc_unsupported"),
    ("unhealthy cluster", "unhealthy_cluster"),
    ("bad leader transferee", "bad_leader_transferee"),
    ("not leader", "not_leader"),
    ("no leader", "no_leader"),
    ("leader changed", "leader_changed"),
    ("request timed out", "request_timed_out"),
    ("required revision has been compacted", "compacted"),
    ("required revision is a future revision", "future_revision"),
    ("database space exceeded", "no_space"),
    ("corrupt cluster", "corrupt"),
    ("permission denied", "permission_denied"),
    ("authentication is not enabled", "auth_not_enabled"),
    ("invalid auth token", "invalid_auth_token"),
    ("authentication failed", "auth_failed"),
    ("revision of auth store is old", "auth_old_revision"),
    ("invalid auth management", "invalid_auth_mgmt"),
    ("root user does not exist", "root_user_not_exist"),
    ("root user does not have root role", "root_role_not_granted"),
    ("user name not found", "user_not_found"),
    ("user name already exists", "user_already_exists"),
    ("user name is empty", "user_empty"),
    ("role name not found", "role_not_found"),
    ("role name already exists", "role_already_exists"),
    ("role name is empty", "role_empty"),
    ("role is not granted to the user", "role_not_granted"),
    ("permission is not granted to the role", "permission_not_granted"),
    ("request is too large", "request_too_large"),
    ("too many requests", "too_many_requests"),
    ("permanently removed from the cluster", "member_removed"),
)

# Answers meaning "this member cannot serve now; another one (or a later try) may".
_UNAVAILABLE_REASONS: Final[frozenset[EtcdReason]] = frozenset(
    {"no_leader", "leader_changed", "request_timed_out"}
)

_HINTS: Final[dict[EtcdReason, str]] = {
    "learner_not_ready": "the learner is still catching up with the leader; retry the promotion shortly",
    "too_many_learners": "etcd allows one learner at a time; promote or remove the existing learner first",
    "unhealthy_cluster": "etcd refused because the change would risk quorum; make every member healthy first",
    "learner_rpc_unsupported": "send this request to a voting member, not a learner",
    "not_leader": "send this request to the current leader",
    "no_space": "compact, defragment every member, then disarm the NOSPACE alarm",
    "no_leader": "the member has no leader: check that a quorum of members runs and can reach each other",
    "permission_denied": "etcd authentication is on and the user named by the client certificate's CN "
    "lacks a role allowing this",
    "root_user_not_exist": "add the user 'root' and grant it the role 'root' before enabling authentication",
    "root_role_not_granted": "grant the role 'root' to the user 'root' before enabling authentication",
    "invalid_auth_mgmt": "while authentication is on, the user 'root' and the role 'root' cannot be removed",
    "user_not_found": "no etcd user of that name (a client certificate logs in as the user its CN names)",
}


def classify_etcd_text(details: str) -> EtcdReason | None:
    """Return the reason for an etcd error text, or None when the text is not etcd's."""
    low = details.lower()
    for fragment, reason in _REASON_FRAGMENTS:
        if fragment in low:
            return reason
    if low.startswith("etcdserver:") or low.startswith("mvcc:"):
        return "other"
    return None


class EtcdServerError(EtcdRequestError):
    """etcd answered with an error; ``reason`` names the condition, the message is etcd's own text."""

    def __init__(
        self, message: str, *, code: str, reason: EtcdReason, endpoint: str | None, hint: str | None = None
    ) -> None:
        super().__init__(message, code=code, endpoint=endpoint, hint=hint)
        self.reason: EtcdReason = reason


class EtcdServerUnavailable(EtcdUnavailable):
    """etcd answered, but cannot serve right now (no leader, timed out internally, leader changed)."""

    def __init__(
        self, message: str, *, code: str, reason: EtcdReason, endpoint: str | None, hint: str | None = None
    ) -> None:
        super().__init__(message, endpoint=endpoint, hint=hint)
        self.code = code
        self.reason: EtcdReason = reason


def map_status(code: str, details: str, *, endpoint: str, timeout: float | None = None) -> EtcdError:
    """Map a gRPC status (code name such as ``"UNAVAILABLE"`` plus details text) to our error tree.

    Pure; the caller raises the result. TLS diagnosis is not done here (it needs network I/O).
    """
    details = details.strip()
    reason = classify_etcd_text(details)
    if reason is not None:
        hint = _HINTS.get(reason)
        message = f"{endpoint}: {details}"
        if reason in _UNAVAILABLE_REASONS:
            return EtcdServerUnavailable(message, code=code, reason=reason, endpoint=endpoint, hint=hint)
        return EtcdServerError(message, code=code, reason=reason, endpoint=endpoint, hint=hint)
    if code == "DEADLINE_EXCEEDED":
        after = f" after {timeout:g}s" if timeout is not None else ""
        return EtcdUnavailable(
            f"{endpoint}: request timed out{after}",
            endpoint=endpoint,
            hint="the member is slow or unreachable; check its health and the network",
        )
    if code == "UNAVAILABLE":
        return EtcdUnavailable(f"{endpoint}: unavailable: {details or 'no details'}", endpoint=endpoint)
    if code == "CANCELLED":
        return EtcdUnavailable(f"{endpoint}: request cancelled: {details}", endpoint=endpoint)
    return EtcdRequestError(f"{endpoint}: {code}: {details or 'no details'}", code=code, endpoint=endpoint)


def is_failover_error(exc: EtcdError) -> bool:
    """Whether a read-only/idempotent call may be retried on another endpoint after ``exc``."""
    return isinstance(exc, EtcdUnavailable | EtcdTLSError) or (
        isinstance(exc, EtcdServerError) and exc.reason == "learner_rpc_unsupported"
    )
