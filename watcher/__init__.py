"""Everything that talks SQL to MySQL (pymysql): the process list map and the heartbeat."""

from watcher.processlist import ProcesslistWatcher, Session, client_endpoint, sessions_from_rows

__all__ = ["ProcesslistWatcher", "Session", "client_endpoint", "sessions_from_rows"]
