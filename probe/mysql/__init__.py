"""The MySQL client/server protocol as seen by a passive observer (sans-I/O)."""

from probe.mysql.conversation import Conversation, ConversationLimits
from probe.mysql.events import (
    TO_CLIENT,
    TO_SERVER,
    CommandCompleted,
    ConnectionEncrypted,
    Event,
    Garbage,
    LoginFinished,
    LoginSeen,
    ReplicationStream,
    ResponseLost,
    Resynced,
    ServerError,
    ServerGreeted,
)

__all__ = [
    "TO_CLIENT",
    "TO_SERVER",
    "CommandCompleted",
    "ConnectionEncrypted",
    "Conversation",
    "ConversationLimits",
    "Event",
    "Garbage",
    "LoginFinished",
    "LoginSeen",
    "ReplicationStream",
    "ResponseLost",
    "Resynced",
    "ServerError",
    "ServerGreeted",
]
