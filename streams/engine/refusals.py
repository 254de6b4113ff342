"""The one-line errors of a stream worker whose principal lacks an ACL (faust apps and the native
engine say the same): what was refused and the ACL that would allow it."""

from __future__ import annotations

from evstream.errors import AuthorizationError, GroupAuthorizationError

__all__ = ["group_refused", "topic_refused"]


def topic_refused(topic: str, operation: str) -> AuthorizationError:
    return AuthorizationError(
        f"the stream worker is not authorized to {operation} topic {topic!r}: its principal needs an ACL "
        f"{{topic: {topic}, operations: [read, describe]}} (README: ACLs per component)",
        resource_type="topic",
        resource=topic,
        operation=operation,
    )


def group_refused(group: str) -> GroupAuthorizationError:
    return GroupAuthorizationError(
        f"the stream worker is not authorized to READ its consumer group {group!r} (the app id): its "
        f"principal needs an ACL {{group: {group}, operations: [read]}} (README: ACLs per component)",
        resource=group,
    )
