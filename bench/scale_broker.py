"""Many devices at once at the embedded broker, with raw asyncio sockets as the clients: what
``bench_scale.py`` prints and ``tests/test_scale.py`` checks at a size CI affords.

Not a benchmark module itself (bench/run.py runs only bench_*.py). Every function takes the
broker's port and MQTT 3.1.1 CONNECT packets (bench.harness.connect_packet) and only talks to
the socket; the caller makes the devices and changes the registry.
"""

from __future__ import annotations

import asyncio
import time

CONNACK_ACCEPTED = b"\x20\x02\x00\x00"


def device_packets(product_id, device_ids, secret, exclusive=(), keepalive=300):
    """{deviceId: CONNECT} for these devices (securemode=3, no timestamp)."""
    from bench.harness import connect_packet
    from devices import signing

    packets = {}
    for device_id in device_ids:
        fields = signing.render(product_id, device_id, secret, client_id=device_id, securemode=3,
                                signmethod="hmacsha256", timestamp=None,
                                exclusive=device_id in exclusive)
        packets[device_id] = connect_packet(fields.mqtt_client_id, fields.mqtt_username,
                                            fields.mqtt_password, keepalive=keepalive)
    return packets


async def _connack(reader, timeout):
    """The CONNACK's 4 bytes, or b"" when the broker closed (or said nothing in time)."""
    try:
        return await asyncio.wait_for(reader.readexactly(4), timeout)
    except (asyncio.IncompleteReadError, ConnectionError, TimeoutError):
        return b""


async def open_one(port, packet, timeout=30):
    """(reader, writer, connack) for one CONNECT; connack b"" when none came."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(packet)
    await writer.drain()
    return reader, writer, await _connack(reader, timeout)


async def hold(port, packets, concurrency=200):
    """Connect every packet and keep the connections: {key: (reader, writer, connack)}."""
    limit = asyncio.Semaphore(concurrency)

    async def one(key, packet):
        async with limit:
            return key, await open_one(port, packet)

    return dict(await asyncio.gather(*(one(k, p) for k, p in packets.items())))


async def closed_within(reader, timeout):
    """Seconds until the broker closes this connection, or None when it stays open that long."""
    started = time.perf_counter()
    try:
        while True:
            data = await asyncio.wait_for(reader.read(1024), timeout)
            if not data:
                return time.perf_counter() - started
    except (ConnectionError, asyncio.IncompleteReadError):
        return time.perf_counter() - started
    except TimeoutError:
        return None


async def storm(port, packets, within_s=1.0):
    """Every CONNECT sent by one connection each, spread evenly over ``within_s``: (answered,
    accepted, dropped, seconds from the first connect until the last CONNACK)."""
    started = time.perf_counter()
    step = within_s / max(1, len(packets))
    last = [started]

    async def one(index, packet):
        await asyncio.sleep(index * step)
        try:
            reader, writer, connack = await open_one(port, packet, timeout=30)
        except OSError:
            return b""
        if connack:
            last[0] = max(last[0], time.perf_counter())
        writer.close()
        return connack

    answers = await asyncio.gather(*(one(i, p) for i, p in enumerate(packets)))
    answered = sum(1 for a in answers if len(a) == 4 and a[:2] == b"\x20\x02")
    accepted = sum(1 for a in answers if a == CONNACK_ACCEPTED)
    return answered, accepted, len(packets) - answered, last[0] - started


def rss_kib(pid):
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def close_all(held):
    for _, writer, _ in held.values():
        writer.close()
