"""Print templates as reports arrive: python3 examples/subscriber.py [ws://127.0.0.1:8086/collector]

With a ``token`` configured on the node, pass it in MYSQLPROBE_TOKEN (sent as a Bearer token).
"""

import asyncio
import json
import os
import sys

import snappy  # reports are raw snappy blocks of JSON
import websockets


async def main(url: str) -> None:
    texts: dict[str, str] = {}  # a template's text comes once per key, with its first report
    token = os.environ.get("MYSQLPROBE_TOKEN", "")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    async with websockets.connect(url, max_size=None, additional_headers=headers) as ws:
        async for message in ws:
            report = json.loads(snappy.uncompress(message))
            for t in report.get("templates", []) if report.get("kind") == "interval" else []:
                texts.setdefault(t["key"], t.get("template", ""))
                p99 = (t["latency_us"]["p99"] or 0) / 1000
                print(f"{report['seq']:>5} {t['key']} {t['count']:>7} {p99:>9.3f}ms {texts[t['key']][:90]}", flush=True)


asyncio.run(main(sys.argv[1] if len(sys.argv) > 1 else "ws://127.0.0.1:8086/collector"))
