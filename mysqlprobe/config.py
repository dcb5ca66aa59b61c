"""Configuration: the YAML file, its defaults, and the errors a bad one gets.

Owns the configuration schema as dataclasses (one docstring per field, aioquic style) and
its strict loading: an unknown key or a value of the wrong type is an error that names the
key and the expected type; nothing is silently ignored or coerced (``"true"`` is not a
boolean, ``true`` is not a port). String values may reference the environment as
``${NAME}``, and secrets can come from the environment alone (``MYSQLPROBE_TOKEN``,
``MYSQLPROBE_WATCHER_PASSWORD``), so they need not be written in the file.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import re
import socket
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml


class ConfigError(ValueError):
    """A configuration problem; the message names the key and what was expected."""


def _check_port(value: int) -> str | None:
    return None if 0 < value < 65536 else "a port number from 1 to 65535"


def _check_positive(value: int) -> str | None:
    return None if value > 0 else "a positive number"


def _check_non_negative(value: int) -> str | None:
    return None if value >= 0 else "zero or a positive number"


def _check_endpoint(value: str) -> str | None:
    return None if re.fullmatch(r"(\[[0-9a-fA-F:.]+\]|[^\s:\[\]]+):\d{1,5}", value) else "HOST:PORT"


@dataclass
class ClusterConfig:
    gossip: bool = False
    """Discover members and detect failures by gossip (true), or keep a static slave list
    managed over HTTP (false)."""
    group: str = "mysqlprobe"
    """Cluster group name: nodes of one group form one cluster."""
    port: int = field(default=7946, metadata={"check": _check_port})
    """Gossip port (gossip mode)."""
    bind: str = "127.0.0.1"
    """Address for gossip and for the election's Raft traffic (gossip mode)."""
    rpcport: int = field(default=7373, metadata={"check": _check_port})
    """Local port of the gossip agent's control interface (gossip mode)."""
    seeds: list[str] = field(default_factory=list, metadata={"check_item": _check_endpoint})
    """Gossip addresses (HOST:PORT) of members to join at start (gossip mode)."""
    raftport: int = field(default=7947, metadata={"check": _check_port})
    """Port of this node's Raft member, if it votes (gossip mode)."""
    voters: list[str] = field(default_factory=list, metadata={"check_item": _check_endpoint})
    """Raft addresses (bind:raftport) of the nodes that vote on the master: masters,
    standbys and a slave or more as witnesses. Empty: this node decides alone."""
    lockttlms: int = field(default=3000, metadata={"check": _check_positive})
    """The master lock expires this long after its holder stops renewing it: how soon a
    standby can take over from a dead master."""


@dataclass
class ProbeConfig:
    device: str = "any"
    """Capture devices, comma-separated: ``any``, ``lo``, ``eth0,eth1`` ..."""
    port: int = field(default=3306, metadata={"check": _check_port})
    """MySQL server port to watch."""
    snappylength: int = field(default=262144, metadata={"check": _check_positive})
    """Snap length: bytes captured per packet (as tcpdump's default: lo and GSO/GRO-enabled
    NICs hand over segments of up to 64 KiB and more, which a 65535 snap length cuts)."""
    workers: int = field(default=2, metadata={"check": _check_positive})
    """Worker processes; the kernel shards connections over them (PACKET_FANOUT_HASH)."""
    buffermb: int = field(default=64, metadata={"check": _check_positive})
    """Kernel capture buffer per worker and device, in MiB: what absorbs a burst while a
    worker is busy."""
    immediate: bool = False
    """Deliver packets at once (1 ms buffer timeout) instead of in kernel blocks (100 ms).
    Timestamps come from the kernel either way; blocks cost less CPU per packet."""
    maxtemplates: int = field(default=5000, metadata={"check": _check_positive})
    """Templates per interval and worker; further ones are counted in an overflow entry."""
    maxslow: int = field(default=100, metadata={"check": _check_non_negative})
    """Slow samples per interval (the worst are kept)."""
    maxconnections: int = field(default=20000, metadata={"check": _check_positive})
    """Connections tracked per worker; the least recently active are evicted first."""
    maxpreparedmb: int = field(default=64, metadata={"check": _check_positive})
    """MiB of prepared-statement SQL a worker keeps over all its connections; past it a newly
    prepared statement keeps only its template (counted: ``limit_hits.max_prepared_bytes``)."""


@dataclass
class PusherConfig:
    servers: list[str] = field(default_factory=list, metadata={"check_item": _check_endpoint})
    """Ingest servers (HOST:PORT) each report is pushed to, one at a time, round-robin."""
    path: str = "/ingest"
    """Websocket path on the ingest servers."""
    preconnect: bool = False
    """Open connections to every server at start instead of on first use."""


@dataclass
class WatcherConfig:
    uname: str = ""
    """MySQL user for SHOW PROCESSLIST; empty turns the watcher off."""
    password: str = ""
    """Its password (or MYSQLPROBE_WATCHER_PASSWORD in the environment)."""
    host: str = "127.0.0.1"
    """MySQL server the watcher asks."""
    port: int = field(default=0, metadata={"check": _check_non_negative})
    """Its port; 0 means probe.port."""
    refreshs: int = field(default=5, metadata={"check": _check_positive})
    """Seconds between process list refreshes."""


@dataclass
class WebsocketConfig:
    writetimeoutms: int = field(default=5000, metadata={"check": _check_positive})
    """A subscriber that does not take a message within this time is dropped."""
    pingtimeouts: int = field(default=30, metadata={"check": _check_positive})
    """Seconds between pings; a peer that does not answer in time is closed."""
    reconnectperiods: int = field(default=5, metadata={"check": _check_positive})
    """Seconds between reconnection attempts (pusher, master subscriptions)."""
    maxmessagesize: int = field(default=64 << 20, metadata={"check": _check_positive})
    """Largest message accepted, in bytes."""
    maxqueue: int = field(default=16, metadata={"check": _check_positive})
    """Messages queued per subscriber; a subscriber that falls this far behind is dropped."""
    maxinbound: int = field(default=64 << 10, metadata={"check": _check_positive})
    """Largest message a /collector subscriber may send to this node (template requests,
    hello, ack), in bytes; a larger one closes that connection (counted)."""
    opensubscribers: bool = False
    """With a token set: let readers of query data in without it (/collector subscribers
    that only read, /metrics, /events/query|scan, /api/history/*, /api/dashboard/*,
    /report/totals); a master's hello, acknowledgements and every endpoint that changes
    state still need it. false: every one of them needs the token."""


def _check_heartbeat_mode(value: str) -> str | None:
    return None if value in ("off", "writer", "reader") else "one of off, writer, reader"


def _check_heartbeat_interval(value: int) -> str | None:
    return None if value >= 100 else "at least 100 (milliseconds)"


@dataclass
class HeartbeatConfig:
    mode: str = field(default="off", metadata={"check": _check_heartbeat_mode})
    """off; writer (next to the primary: upserts the heartbeat row); reader (next to a
    replica: reports replication lag). Uses the watcher's credentials, host and port."""
    intervalms: int = field(default=1000, metadata={"check": _check_heartbeat_interval})
    """Milliseconds between heartbeats (writer) or reads (reader); 100 at least."""
    database: str = "mysqlprobe"
    """Database of the heartbeat table (created by the writer when missing)."""
    table: str = "heartbeat"
    """Name of the heartbeat table."""
    id: int = field(default=1, metadata={"check": _check_positive})
    """Row the writer writes and readers read: one per primary sharing the table."""


@dataclass
class TracesConfig:
    ttls: int = field(default=86400, metadata={"check": _check_positive})
    """Seconds a slow-query event is kept in the trace store."""
    maxevents: int = field(default=100_000, metadata={"check": _check_positive})
    """Events kept at most; the oldest go first."""
    maxmb: int = field(default=64, metadata={"check": _check_positive})
    """MiB of events (their JSON) kept at most; the oldest go first."""


@dataclass
class MetricsConfig:
    retentions: int = field(default=3600, metadata={"check": _check_positive})
    """Seconds of per-interval metrics kept for /api/metrics."""
    maxsamples: int = field(default=100_000, metadata={"check": _check_positive})
    """Samples kept at most; the oldest go first."""


def _check_log_level(value: str) -> str | None:
    return None if value in ("debug", "info", "warning", "error") else "one of debug, info, warning, error"


def _check_log_format(value: str) -> str | None:
    return None if value in ("text", "json") else "one of text, json"


def _check_otlp_endpoint(value: str) -> str | None:
    return None if not value or re.match(r"https?://[^\s/]+", value) else "an http:// or https:// URL, or empty"


def _check_db_system(value: str) -> str | None:
    return None if value in ("mysql", "mariadb") else "one of mysql, mariadb"


@dataclass
class LogConfig:
    level: str = field(default="info", metadata={"check": _check_log_level})
    """Lowest level logged: debug, info, warning, error. SQL text is logged only at debug."""
    format: str = field(default="text", metadata={"check": _check_log_format})
    """text (one line per record) or json (one object per line: ts, level, logger, msg)."""


@dataclass
class PrometheusConfig:
    topn: int = field(default=100, metadata={"check": _check_positive})
    """Templates with series of their own on /metrics, chosen by load; the rest add up in
    one series with key="other"."""
    templatelength: int = field(default=200, metadata={"check": _check_positive})
    """Characters of template text in mysqlprobe_template_info; longer texts are cut."""


@dataclass
class OtlpConfig:
    endpoint: str = field(default="", metadata={"check": _check_otlp_endpoint})
    """OTLP/HTTP metrics URL (such as http://127.0.0.1:4318/v1/metrics); empty: no export."""
    topn: int = field(default=100, metadata={"check": _check_positive})
    """Templates exported per interval, by load; the rest add up in one data point."""
    dbsystem: str = field(default="mysql", metadata={"check": _check_db_system})
    """db.system.name of the exported metrics: mysql or mariadb."""
    timeoutms: int = field(default=5000, metadata={"check": _check_positive})
    """Time allowed for one export request."""
    maxqueue: int = field(default=16, metadata={"check": _check_positive})
    """Exports waiting to be sent at most; further ones are dropped and counted."""


def _check_history_mode(value: str) -> str | None:
    return None if value in ("auto", "on", "off") else "one of auto, on, off"


@dataclass
class HistoryConfig:
    mode: str = field(default="auto", metadata={"check": _check_history_mode})
    """auto: a master (and a slave no master has subscribed to, outside gossip mode) keeps
    query history; on: every node does; off: none."""
    dsn: str = ""
    """PostgreSQL DSN (e.g. ``postgresql://user@host/db``) of a history store shared by
    several nodes (or MYSQLPROBE_HISTORY_DSN in the environment); empty: SQLite in the
    state directory (history.sqlite3)."""
    rawhours: int = field(default=24, metadata={"check": _check_positive})
    """Hours per-interval rows are kept."""
    minutedays: int = field(default=7, metadata={"check": _check_positive})
    """Days 1-minute rollups are kept."""
    hourdays: int = field(default=90, metadata={"check": _check_positive})
    """Days 1-hour and 1-day rollups are kept."""
    maxmb: int = field(default=1024, metadata={"check": _check_positive})
    """MiB of rows kept at most (sketches, counters and a fixed charge per row); the oldest
    rows a coarser level already holds go first, and are counted."""


@dataclass
class HttpConfig:
    maxconnections: int = field(default=1000, metadata={"check": _check_positive})
    """Concurrent HTTP and websocket connections at most (and never more than the descriptor
    limit less 256); over it, the connection idle longest is closed (counted)."""
    idletimeouts: int = field(default=15, metadata={"check": _check_positive})
    """Seconds a connection may stay without a request in progress (idle keep-alive, or
    headers still incomplete) before it is closed (counted); subscribers are not idle."""


@dataclass
class TlsConfig:
    certfile: str = ""
    """PEM certificate chain this node serves with (https, wss /collector); empty: plain."""
    keyfile: str = ""
    """PEM private key of certfile."""
    dial: bool = False
    """Dial slaves (master subscriptions) and ingest servers (pusher) with wss://."""
    cafile: str = ""
    """PEM CA certificates that peers dialled must chain to; empty: the system's CAs."""
    verify: bool = True
    """Check peers' certificates and host names when dialling; false only in a lab."""


@dataclass
class Config:
    slave: bool = True
    """true: capture and report (slave); false: merge slaves' reports (master or standby)."""
    serverport: int = field(default=8086, metadata={"check": _check_port})
    """HTTP and websocket port of this node (/collector, /status, /config, /cluster)."""
    bind: str = "127.0.0.1"
    """Address to listen on; 0.0.0.0 or :: only when meant."""
    interval: int = field(default=10, metadata={"check": _check_positive})
    """Seconds per report."""
    slowthresholdms: int = field(default=1000, metadata={"check": _check_non_negative})
    """Statements at least this slow (ms) are kept as slow samples."""
    token: str = ""
    """When set (or MYSQLPROBE_TOKEN): required by endpoints that change state, and by reads of
    query data (templates, their statistics, slow samples: /collector, /metrics,
    /events/query|scan, /api/history/*, /api/dashboard/*, /report/totals) unless
    websocket.opensubscribers. Sent as Authorization: Bearer T, X-Mysqlprobe-Token: T or
    ?token=T."""
    node: str = ""
    """This node's name in reports; empty means HOSTNAME:serverport."""
    redact: bool = False
    """Slow samples carry templates instead of raw SQL, and no parameters."""
    statedir: str = ""
    """Directory for persistent state (cluster membership, checkpoints, spool); empty
    means a directory named after the config file, next to it."""
    cluster: ClusterConfig = field(default_factory=ClusterConfig)
    probe: ProbeConfig = field(default_factory=ProbeConfig)
    pusher: PusherConfig = field(default_factory=PusherConfig)
    watcher: WatcherConfig = field(default_factory=WatcherConfig)
    websocket: WebsocketConfig = field(default_factory=WebsocketConfig)
    heartbeat: HeartbeatConfig = field(default_factory=HeartbeatConfig)
    traces: TracesConfig = field(default_factory=TracesConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    log: LogConfig = field(default_factory=LogConfig)
    prometheus: PrometheusConfig = field(default_factory=PrometheusConfig)
    otlp: OtlpConfig = field(default_factory=OtlpConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    history: HistoryConfig = field(default_factory=HistoryConfig)
    tls: TlsConfig = field(default_factory=TlsConfig)

    @property
    def node_name(self) -> str:
        return self.node or f"{socket.gethostname()}:{self.serverport}"

    @property
    def devices(self) -> list[str]:
        return [d.strip() for d in self.probe.device.split(",") if d.strip()]


_ENV_SECRETS = {
    "MYSQLPROBE_TOKEN": ("token",),
    "MYSQLPROBE_WATCHER_PASSWORD": ("watcher", "password"),
    "MYSQLPROBE_HISTORY_DSN": ("history", "dsn"),
}
#: Keys whose values are never repeated in an error message (matched on the last part).
_SECRET_WORDS = re.compile(r"pass|pwd|token|secret|dsn|key|credential|auth", re.IGNORECASE)


def _shown(key: str, value: Any) -> str:
    """A value as an error message may show it: secrets are described, never echoed."""
    if _SECRET_WORDS.search(key.rsplit(".", 1)[-1].split("[", 1)[0]):
        return f"a hidden value ({type(value).__name__})"
    return f"{value!r} ({type(value).__name__})"


_ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


def _type_name(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin is list:
        item = typing.get_args(tp)[0]
        plural = {bool: "booleans", int: "integers", str: "strings", float: "numbers"}.get(item, str(item))
        return f"a list of {plural}"
    return {bool: "a boolean (true/false)", int: "an integer", str: "a string", float: "a number"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _expand(value: str, key: str) -> str:
    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise ConfigError(f"{key}: environment variable {name} is not set")
        return os.environ[name]

    return _ENV_REF.sub(replace, value)


def _build(cls: type[Any], data: Any, prefix: str) -> Any:
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'the configuration'}: expected a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        where = f"{prefix}." if prefix else ""
        raise ConfigError(f"unknown key '{where}{unknown[0]}' (known keys: {', '.join(sorted(fields))})")
    values: dict[str, Any] = {}
    for name, raw in data.items():
        key = f"{prefix}.{name}" if prefix else name
        values[name] = _value(hints[name], raw, key, fields[name].metadata)
    return cls(**values)


def _value(tp: Any, raw: Any, key: str, metadata: Any) -> Any:
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, raw, key)
    origin = typing.get_origin(tp)
    if origin is list:
        item_type = typing.get_args(tp)[0]
        if not isinstance(raw, list):
            raise ConfigError(f"{key}: expected {_type_name(tp)}, got {_shown(key, raw)}")
        items = [_scalar(item_type, item, f"{key}[{i}]") for i, item in enumerate(raw)]
        check = metadata.get("check_item")
        for i, item in enumerate(items):
            problem = check(item) if check else None
            if problem:
                raise ConfigError(f"{key}[{i}]: expected {problem}, got {_shown(key, item)}")
        return items
    value = _scalar(tp, raw, key)
    check = metadata.get("check")
    problem = check(value) if check else None
    if problem:
        raise ConfigError(f"{key}: expected {problem}, got {_shown(key, value)}")
    return value


def _scalar(tp: Any, raw: Any, key: str) -> Any:
    # bool is an int in Python: keep them apart, both ways.
    ok = isinstance(raw, tp) and not (tp is int and isinstance(raw, bool))
    if not ok:
        raise ConfigError(f"{key}: expected {_type_name(tp)}, got {_shown(key, raw)}")
    if tp is str:
        return _expand(raw, key)
    return raw


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """Where and what, without the snippet of the file PyYAML quotes (it may be a
    password line)."""
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or "syntax error"
    problem = re.sub(r"'[^']*'|\"[^\"]*\"", "'...'", str(problem))  # PyYAML may quote a token
    if mark is None:
        return problem
    return f"line {mark.line + 1}, column {mark.column + 1}: {problem}"


def load_config(path: str | os.PathLike[str] | None) -> Config:
    """Read and check a configuration file; ``None`` gives the defaults (plus environment)."""
    data: Any = {}
    if path is not None:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"cannot read {path}: {exc.strerror or exc}") from None
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML: {_yaml_problem(exc)}") from None
        except ValueError:  # a tagged or date-like value PyYAML cannot build (0000-00-00): not echoed
            raise ConfigError(
                f"{path}: not valid YAML: a date, time or tagged value out of range (quote it to keep it text)"
            ) from None
        except RecursionError:
            raise ConfigError(f"{path}: not valid YAML: nested too deeply") from None
    config: Config = _build(Config, data, "")
    for env, where in _ENV_SECRETS.items():
        value = os.environ.get(env)
        if value:
            target: Any = config
            for part in where[:-1]:
                target = getattr(target, part)
            setattr(target, where[-1], value)
    if config.watcher.port == 0:
        config.watcher.port = config.probe.port
    if not config.devices:
        raise ConfigError("probe.device: expected at least one device name")
    if config.heartbeat.mode != "off" and not config.watcher.uname:
        raise ConfigError("heartbeat.mode: needs watcher.uname (the heartbeat uses the watcher's credentials)")
    return config


def state_dir(config: Config, config_path: str | None) -> Path:
    if config.statedir:
        return Path(config.statedir)
    if config_path:
        path = Path(config_path).resolve()
        return path.parent / f"{path.stem}.state"
    return Path.cwd() / "mysqlprobe.state"


def documented_defaults() -> list[tuple[str, Any, str]]:
    """(key, default, doc) of every setting, for the docs and the tests."""
    out: list[tuple[str, Any, str]] = []

    def walk(cls: type[Any], prefix: str) -> None:
        docs = _field_docs(cls)
        for f in dataclasses.fields(cls):
            key = f"{prefix}{f.name}"
            default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
            if dataclasses.is_dataclass(default):
                walk(type(default), key + ".")
            else:
                out.append((key, default, docs.get(f.name, "")))

    walk(Config, "")
    return out


def _field_docs(cls: type[Any]) -> dict[str, str]:
    """Field docstrings (the string literal after each field), from the source."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(cls))
    body = tree.body[0].body  # type: ignore[attr-defined]
    docs: dict[str, str] = {}
    for node, following in itertools.pairwise(body):
        if (
            isinstance(node, ast.AnnAssign)
            and isinstance(node.target, ast.Name)
            and isinstance(following, ast.Expr)
            and isinstance(following.value, ast.Constant)
            and isinstance(following.value.value, str)
        ):
            docs[node.target.id] = " ".join(following.value.value.split())
    return docs


def default_yaml() -> str:
    """The documented default configuration file (config.yaml is this text)."""
    lines = [
        "# mysqlprobe configuration. Every key is optional: the values below are the defaults.",
        "# Unknown keys and values of the wrong type are errors. String values may use ${ENV_VAR};",
        "# MYSQLPROBE_TOKEN and MYSQLPROBE_WATCHER_PASSWORD in the environment override the secrets.",
    ]
    section = ""
    for key, default, doc in documented_defaults():
        parts = key.split(".")
        indent = "  " * (len(parts) - 1)
        if len(parts) > 1 and parts[0] != section:
            section = parts[0]
            lines += ["", f"{section}:"]
        elif len(parts) == 1 and section:
            section = ""
            lines.append("")
        for text in _wrap(doc.replace("``", "`"), 96 - len(indent)):
            lines.append(f"{indent}# {text}")
        value = yaml.safe_dump(default, default_flow_style=True).strip().removesuffix("...").strip()
        lines.append(f"{indent}{parts[-1]}: {value}")
    return "\n".join(lines) + "\n"


def _wrap(text: str, width: int) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


if __name__ == "__main__":
    print(default_yaml(), end="")
