"""TLS end to end, with certificates made here: a slave serving https and wss /collector, a
master subscribing over wss with certificate checks, the pusher pushing over wss; a master
and a pusher that trust another CA are refused, and plain http to a TLS node gets nowhere."""

from __future__ import annotations

import asyncio
import datetime
import ipaddress
import json
import os
import ssl
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import websockets
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from message import decode
from tests.support.mariadb import free_port
from tests.support.nodes import Node

pytestmark = [pytest.mark.live]
if os.geteuid() != 0:  # pragma: no cover
    pytestmark.append(pytest.mark.skip(reason="a slave captures on lo: needs root"))


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def make_ca(directory: Path, label: str) -> tuple[Path, ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"{label} CA"))
        .issuer_name(_name(f"{label} CA"))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True)
        .sign(key, hashes.SHA256())
    )
    path = directory / f"{label}-ca.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path, key, cert


def make_server_cert(
    directory: Path, ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate
) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("127.0.0.1"))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = directory / "server.pem", directory / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path


class IngestServer:
    """A wss ingest server: acknowledges every report and keeps it."""

    def __init__(self, context: ssl.SSLContext) -> None:
        self.port = free_port()
        self.reports: list[dict[str, Any]] = []
        self.context = context
        self.loop = asyncio.new_event_loop()
        self.ready = threading.Event()
        self.stopping: asyncio.Future[None] | None = None
        self.thread = threading.Thread(target=self.loop.run_until_complete, args=(self.main(),), daemon=True)
        self.thread.start()
        assert self.ready.wait(10)

    async def main(self) -> None:
        self.stopping = self.loop.create_future()
        async with websockets.serve(self.handle, "127.0.0.1", self.port, ssl=self.context):
            self.ready.set()
            await self.stopping

    async def handle(self, ws: Any) -> None:
        try:
            async for message in ws:
                report = decode(message)
                self.reports.append(report)
                await ws.send(json.dumps({"ack": {"node": report["node"], "seq": report["seq"]}}))
        except websockets.ConnectionClosed:
            pass

    def close(self) -> None:
        self.loop.call_soon_threadsafe(lambda: self.stopping and self.stopping.set_result(None))
        self.thread.join(10)


def wait_for(predicate: Any, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.3)
    raise AssertionError("condition not met in time")


def https_status(port: int, cafile: Path) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=str(cafile))
    with urllib.request.urlopen(f"https://127.0.0.1:{port}/status", context=context, timeout=10) as resp:
        return dict(json.loads(resp.read()))


async def read_one_report(url: str, cafile: Path) -> dict[str, Any]:
    context = ssl.create_default_context(cafile=str(cafile))
    async with websockets.connect(url, ssl=context, max_size=None) as ws:
        return dict(decode(await asyncio.wait_for(ws.recv(), 15)))


def test_wss_collector_master_subscriptions_and_pusher(tmp_path: Path) -> None:
    ca, ca_key, ca_cert = make_ca(tmp_path, "good")
    wrong_ca, _, _ = make_ca(tmp_path, "other")
    cert, key = make_server_cert(tmp_path, ca_key, ca_cert)
    ingest_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ingest_context.load_cert_chain(cert, key)
    ingest = IngestServer(ingest_context)
    wrong_ingest = IngestServer(ingest_context)
    slave = Node(
        tmp_path,
        {
            "interval": 1,
            "probe": {"device": "lo", "port": free_port(), "workers": 1},
            "tls": {"certfile": str(cert), "keyfile": str(key), "dial": True, "cafile": str(ca)},
            "pusher": {"servers": [f"127.0.0.1:{ingest.port}"]},
        },
        "tls-slave",
    )
    pusher_wrong = Node(
        tmp_path,
        {
            "interval": 1,
            "probe": {"device": "lo", "port": free_port(), "workers": 1},
            "tls": {"dial": True, "cafile": str(wrong_ca)},
            "pusher": {"servers": [f"127.0.0.1:{wrong_ingest.port}"]},
        },
        "tls-pusher-wrong-ca",
    )
    master = Node(tmp_path, {"slave": False, "interval": 1, "tls": {"dial": True, "cafile": str(ca)}}, "tls-master")
    wrong = Node(
        tmp_path, {"slave": False, "interval": 1, "tls": {"dial": True, "cafile": str(wrong_ca)}}, "tls-wrong-ca"
    )
    nodes: list[Node] = [master, wrong, pusher_wrong]
    try:
        # The slave serves https only: wait for it with a client that trusts the CA.
        slave.start(ready=lambda: https_status(slave.port, ca))
        nodes.append(slave)
        for node in (master, wrong, pusher_wrong):
            node.start()
        # https with the right CA; plain http to the TLS port gets no answer.
        assert https_status(slave.port, ca)["role"] == "slave"
        assert _try(lambda: urllib.request.urlopen(f"http://127.0.0.1:{slave.port}/status", timeout=5)) is None
        # wss /collector for a subscriber that trusts the CA.
        report = asyncio.run(read_one_report(f"wss://127.0.0.1:{slave.port}/collector", ca))
        assert report["node"] == "tls-slave"
        for node in (master, wrong):
            assert node.request(f"/cluster/join?addr=127.0.0.1:{slave.port}")[0] == 200

        def link(node: Node) -> dict[str, Any]:
            return dict(node.get("/status")["subscriptions"][0])

        wait_for(lambda: link(master)["reports"] >= 2)
        assert link(master)["state"] == "connected"
        wait_for(lambda: link(wrong)["failures"] >= 2)
        refused = link(wrong)
        assert refused["reports"] == 0 and refused["state"] != "connected"
        assert "CERTIFICATE_VERIFY_FAILED" in refused["last_error"], refused
        # The pusher: over wss to the ingest server; refused by one whose CA it does not trust.
        wait_for(lambda: len(ingest.reports) >= 2)
        assert {r["node"] for r in ingest.reports} == {"tls-slave"}
        time.sleep(2)
        assert wrong_ingest.reports == []
        pushed = pusher_wrong.get("/status")["pusher"]
        assert pushed["acked"] == 0 and "CERTIFICATE_VERIFY_FAILED" in json.dumps(pushed), pushed
    finally:
        for node in nodes:
            node.stop()
        ingest.close()
        wrong_ingest.close()


def _try(action: Any) -> Any:
    try:
        return action()
    except Exception:
        return None


@pytest.mark.parametrize(
    ("tls", "message"),
    [
        ({"certfile": "/nonexistent/cert.pem"}, "tls.certfile and tls.keyfile go together"),
        ({"certfile": "/nonexistent/cert.pem", "keyfile": "/nonexistent/key.pem"}, "cannot load /nonexistent/cert.pem"),
        ({"dial": True, "cafile": "/nonexistent/ca.pem"}, "tls.cafile: cannot load /nonexistent/ca.pem"),
    ],
)
def test_bad_tls_files_are_one_line_and_exit_2(tmp_path: Path, tls: dict[str, Any], message: str) -> None:
    node = Node(tmp_path, {"slave": False, "tls": tls}, "bad-tls")
    with pytest.raises(RuntimeError, match="node exited with 2") as failure:
        node.start(timeout=30)
    assert message in str(failure.value) and "Traceback" not in node.log.read_text()
