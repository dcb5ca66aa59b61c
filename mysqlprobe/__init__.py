"""Composition root of mysqlprobe: command line, configuration, HTTP/websocket server and
process wiring. The layers below (message, probe, watcher, pusher, cluster) never import it."""

__version__ = "0.1.0"
