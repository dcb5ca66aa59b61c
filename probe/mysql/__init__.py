"""The MySQL client/server protocol as seen by a passive observer (sans-I/O)."""

from probe.mysql.conversation import Conversation, ConversationLimits
from probe.mysql.events import (
    TO_CLIENT,
    TO_SERVER,
    CommandCompleted,
    ConnectionEncrypted,
    Event,
    Garbage,
    LoginSeen,
    ReplicationStream,
    ResponseLost,
    Resynced,
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
    "LoginSeen",
    "ReplicationStream",
    "ResponseLost",
    "Resynced",
    "ServerGreeted",
]
