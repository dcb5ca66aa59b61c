"""TLS for the node's server (https, wss /collector) and for what it dials (a master's
subscriptions to slaves, the pusher's ingest servers).

Owns turning the ``tls`` configuration into ``ssl.SSLContext`` objects. The server side
needs a certificate chain and its key. The client side verifies the peer's certificate and
host name by default, against ``tls.cafile`` (or the system's CAs when empty); turning the
checks off (``tls.verify: false``) is possible for a lab and logged as a warning at start.
Unreadable files are a ``ValueError`` naming the key and the file, never a traceback.
"""

from __future__ import annotations

import logging
import ssl

from mysqlprobe.config import TlsConfig

log = logging.getLogger("mysqlprobe.tls")


def server_context(config: TlsConfig) -> ssl.SSLContext | None:
    """The server's context, or None to serve plain HTTP."""
    if not config.certfile and not config.keyfile:
        return None
    if not config.certfile or not config.keyfile:
        raise ValueError("tls.certfile and tls.keyfile go together: set both or neither")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(config.certfile, config.keyfile)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(
            f"tls.certfile/tls.keyfile: cannot load {config.certfile} with {config.keyfile}: {exc}"
        ) from None
    return context


def client_context(config: TlsConfig) -> ssl.SSLContext | None:
    """The context for connections the node dials, or None to dial plain ws://."""
    if not config.dial:
        return None
    try:
        context = ssl.create_default_context(cafile=config.cafile or None)
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"tls.cafile: cannot load {config.cafile}: {exc}") from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not config.verify:
        log.warning("tls.verify is false: peers' certificates are NOT checked")
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context
