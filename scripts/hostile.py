#!/usr/bin/env python3
"""Hostile input against a running Teleconsult server, as a stranger on the internet would send it.

Loopback only: every address must be 127.0.0.1 or ::1 (the script refuses anything else).
Each probe prints what it sent, what came back, whether that is what the server promises
(docs/signaling.md, docs/security.md), and whether the server still answers /healthz/live
afterwards. Exit status 0 only if every probe got its expected answer and the server stayed
healthy throughout.

    scripts/hostile --http 127.0.0.1:8080 --media 127.0.0.1:40000 [--tcp 127.0.0.1:40000]
        [--metrics 127.0.0.1:9090 [--slow-token LINK_TOKEN --talker-token PRACTITIONER_TOKEN]]

Needs the `websockets` package (scripts/install-test-deps puts it in target/test-venv;
scripts/hostile runs the script with that interpreter).
"""

import argparse
import asyncio
import ipaddress
import json
import os
import socket
import sys
import time

import websockets

RESULTS = []


def loopback(addr):
    host, _, port = addr.rpartition(":")
    host = host.strip("[]")
    if not ipaddress.ip_address(host).is_loopback:
        sys.exit(f"hostile: {addr} is not a loopback address; this script only probes loopback")
    return host, int(port)


async def healthy(http):
    """GET /healthz/live over a fresh connection: True on a 200."""
    host, port = http
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 3)
        writer.write(f"GET /healthz/live HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), 3)
        writer.close()
        return b" 200 " in status
    except (OSError, asyncio.TimeoutError):
        return False


def record(name, sent, came_back, ok, health):
    RESULTS.append((name, sent, came_back, ok, health))
    mark = "ok " if ok and health else "BAD"
    print(f"[{mark}] {name}\n      sent: {sent}\n      back: {came_back}\n      healthy afterwards: {health}", flush=True)


async def ws_close_code(ws, timeout):
    """Read until the server closes; its close code (or None if it kept the socket open)."""
    try:
        async with asyncio.timeout(timeout):
            async for _ in ws:
                pass
    except TimeoutError:
        return None
    except websockets.ConnectionClosed:
        pass
    return ws.close_code


async def probe_ws(args, http, name, sent, frames, expect, timeout=15, between=0.0):
    url = f"ws://{http[0]}:{http[1]}/ws"
    try:
        async with websockets.connect(url, max_size=None, open_timeout=5, ping_interval=None) as ws:
            try:
                for f in frames:
                    await ws.send(f)
                    if between:
                        await asyncio.sleep(between)
            except websockets.ConnectionClosed:
                pass
            code = await ws_close_code(ws, timeout)
            back = f"closed with {code} ({ws.close_reason!r})" if code is not None else "still open"
            ok = code in expect
    except (OSError, websockets.InvalidHandshake) as e:
        back, ok = f"handshake failed: {e}", False
    record(name, sent, back, ok, await healthy(http))


async def probe_ping_before_join(args, http):
    """Pings before `join` do not extend the join deadline (closed with 4408 on time)."""
    url = f"ws://{http[0]}:{http[1]}/ws"
    started = time.monotonic()
    async with websockets.connect(url, open_timeout=5, ping_interval=None) as ws:
        async def keep_pinging():
            try:
                while True:
                    await ws.send('{"type":"ping"}')
                    await asyncio.sleep(1)
            except websockets.ConnectionClosed:
                return

        pinger = asyncio.create_task(keep_pinging())
        code = await ws_close_code(ws, args.join_timeout + 10)
        pinger.cancel()
    took = time.monotonic() - started
    ok = code == 4408 and took < args.join_timeout + 5
    record("ws: pings instead of join", "a ping every second, never a join",
           f"closed with {code} after {took:.1f} s", ok, await healthy(http))


async def probe_http(http, name, request, expect_status, read_timeout=10):
    host, port = http
    try:
        reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        writer.write(request)
        await writer.drain()
        status = await asyncio.wait_for(reader.readline(), read_timeout)
        writer.close()
        back = status.decode(errors="replace").strip() or "connection closed"
        ok = any(f" {s} " in f"{back} " for s in expect_status)
    except (OSError, asyncio.TimeoutError) as e:
        back, ok = f"no answer ({type(e).__name__})", False
    record(name, request[:80].decode(errors="replace").replace("\r\n", "\\r\\n") + ("…" if len(request) > 80 else ""),
           back, ok, await healthy(http))


async def probe_slow_headers(http, header_timeout):
    """A header that never ends is cut off by the server (slow-loris)."""
    host, port = http
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET / HTTP/1.1\r\nHost: x\r\nX-Slow: ")
    await writer.drain()
    started = time.monotonic()
    closed = False
    try:
        while time.monotonic() - started < header_timeout + 10:
            writer.write(b"a")
            await writer.drain()
            try:
                chunk = await asyncio.wait_for(reader.read(1024), 1.0)
                if chunk == b"" or chunk.startswith(b"HTTP/1.1 408"):
                    closed = True
                    break
            except asyncio.TimeoutError:
                continue
    except (ConnectionResetError, BrokenPipeError):
        closed = True
    took = time.monotonic() - started
    writer.close()
    record("http: a header that never ends", "one byte of a header per second",
           f"{'cut off' if closed else 'still open'} after {took:.1f} s", closed, await healthy(http))


async def probe_udp_garbage(http, media, count):
    sock = socket.socket(socket.AF_INET6 if ":" in media[0] else socket.AF_INET, socket.SOCK_DGRAM)
    sent = 0
    for i in range(count):
        size = 1 + (i * 37) % 1400
        payload = os.urandom(size)
        # Some look like RTP (first byte 128..191), some like STUN (0..3), some like DTLS (20..63).
        payload = bytes([(128, 1, 22, 200)[i % 4]]) + payload[1:]
        sock.sendto(payload, media)
        sent += 1
    sock.setblocking(False)
    replies = 0
    await asyncio.sleep(0.5)
    while True:
        try:
            sock.recv(2048)
            replies += 1
        except BlockingIOError:
            break
    sock.close()
    # An unknown source is never answered (no reflection or amplification).
    record("udp: garbage on the media port", f"{sent} datagrams of random bytes (RTP-, STUN-, DTLS-looking)",
           f"{replies} replies", replies == 0, await healthy(http))


async def probe_tcp_silent(http, tcp, first_message_secs):
    reader, writer = await asyncio.open_connection(*tcp)
    started = time.monotonic()
    try:
        data = await asyncio.wait_for(reader.read(1), first_message_secs + 10)
        closed = data == b""
    except asyncio.TimeoutError:
        closed = False
    except ConnectionResetError:
        closed = True
    took = time.monotonic() - started
    writer.close()
    record("tcp media: connect and say nothing", "a TCP connection to the ICE-TCP port, no STUN",
           f"{'closed' if closed else 'still open'} after {took:.1f} s", closed, await healthy(http))


async def probe_tcp_many(http, tcp, count):
    conns = []
    for _ in range(count):
        try:
            conns.append(await asyncio.wait_for(asyncio.open_connection(*tcp), 3))
        except (OSError, asyncio.TimeoutError):
            break
    await asyncio.sleep(0.5)
    closed = 0
    for reader, writer in conns:
        try:
            data = await asyncio.wait_for(reader.read(1), 0.2)
            if data == b"":
                closed += 1
        except asyncio.TimeoutError:
            pass
        except ConnectionResetError:
            closed += 1
        writer.close()
    record("tcp media: many connections from one address", f"{count} TCP connections at once",
           f"{closed} closed by the server at once", closed > 0, await healthy(http))


def scrape(metrics, name):
    """Sum of the samples of `name` on the server's /metrics (0 if absent)."""
    host, port = metrics
    with socket.create_connection((host, port), timeout=5) as c:
        c.sendall(f"GET /metrics HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := c.recv(65536):
            data += chunk
    total = 0.0
    for line in data.decode(errors="replace").splitlines():
        if line.startswith(name) and line[len(name):len(name) + 1] in (" ", "{"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def probe_udp_flood(http, media, metrics, count):
    """One source sending more datagrams that are no participant's than allowed is ignored."""
    before = scrape(metrics, "teleconsult_media_sources_ignored_total")
    sock = socket.socket(socket.AF_INET6 if ":" in media[0] else socket.AF_INET, socket.SOCK_DGRAM)
    for i in range(count):
        sock.sendto(bytes([0x80]) + os.urandom(40), media)
    sock.close()
    deadline = time.monotonic() + 5
    after = before
    while time.monotonic() < deadline and after <= before:
        await asyncio.sleep(0.1)
        after = scrape(metrics, "teleconsult_media_sources_ignored_total")
    record("udp: a flood from one source", f"{count} RTP-looking datagrams from one socket at once",
           f"sources ignored: {before:.0f} -> {after:.0f}", after > before, await healthy(http))


async def probe_non_reading_ws(http, metrics, slow_token, talker_token, seconds):
    """A joined client that stops reading is disconnected (4008 slow_consumer), counted."""
    url = f"ws://{http[0]}:{http[1]}/ws"
    before = scrape(metrics, 'teleconsult_signaling_errors_total{kind="slow_consumer"}')
    raw = socket.socket(socket.AF_INET6 if ":" in http[0] else socket.AF_INET, socket.SOCK_STREAM)
    # A tiny receive window and MSS, so that the server's send buffer stays small.
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_MAXSEG, 536)
    raw.connect(http)
    raw.setblocking(False)
    async with websockets.connect(url, sock=raw, max_size=None, open_timeout=5, ping_interval=None,
                                  max_queue=1) as slow:
        await slow.send(json.dumps({"type": "join", "token": slow_token}))
        me = None
        while me is None:
            m = json.loads(await asyncio.wait_for(slow.recv(), 10))
            if m.get("type") == "joined":
                me = m["you"]["id"]
        # From here on `slow` is not read (the library reads only into its one-message queue).
        sent, dropped = 0, False
        async with websockets.connect(url, max_size=None, open_timeout=5, ping_interval=None) as talker:
            await talker.send(json.dumps({"type": "join", "token": talker_token}))

            async def watch():
                async for raw_msg in talker:
                    m = json.loads(raw_msg)
                    if m.get("type") == "participant_state" and m.get("participant") == me:
                        return True
                    if m.get("type") == "participant_left" and m.get("participant") == me:
                        return True
                return False

            watcher = asyncio.create_task(watch())
            deadline = time.monotonic() + seconds
            while not watcher.done() and time.monotonic() < deadline:
                await talker.send(json.dumps({"type": "mute", "kind": "audio", "muted": sent % 2 == 0}))
                sent += 1
                if sent % 20 == 0:
                    await asyncio.sleep(0.03)
            dropped = watcher.done() and watcher.result()
            watcher.cancel()
        code = await ws_close_code(slow, 10)
    after = scrape(metrics, 'teleconsult_signaling_errors_total{kind="slow_consumer"}')
    ok = dropped and after > before and code in (4008, 1006, None)
    record("ws: a joined client that stops reading", f"{sent} mute toggles by another participant",
           f"others told it dropped: {dropped}; closed with {code}; slow_consumer {before:.0f} -> {after:.0f}",
           ok, await healthy(http))


async def main():
    p = argparse.ArgumentParser(description="Hostile input against a Teleconsult server (loopback only).")
    p.add_argument("--http", required=True, help="host:port of the HTTP/WebSocket listener")
    p.add_argument("--media", required=True, help="host:port of the UDP media port")
    p.add_argument("--tcp", help="host:port of the ICE-TCP media port (skipped if absent)")
    p.add_argument("--max-message-bytes", type=int, default=65536)
    p.add_argument("--join-timeout", type=int, default=10, help="signaling.join_timeout_secs")
    p.add_argument("--header-timeout", type=int, default=10, help="server.header_read_timeout_secs")
    p.add_argument("--tcp-first-message", type=float, default=5.0, help="media.tcp_first_message_ms / 1000")
    p.add_argument("--tcp-max-per-ip", type=int, default=16)
    p.add_argument("--metrics", help="host:port of the metrics listener (the flood and slow-reader "
                   "probes read their counters there; skipped if absent)")
    p.add_argument("--slow-token", help="a join credential for the client that stops reading")
    p.add_argument("--talker-token", help="a join credential (admitted on joining, e.g. a practitioner) "
                   "for the participant who keeps talking; same consultation as --slow-token")
    p.add_argument("--talk-seconds", type=float, default=60.0,
                   help="how long the talker may toggle mute before the slow-reader probe gives up")
    args = p.parse_args()
    http = loopback(args.http)
    media = loopback(args.media)
    tcp = loopback(args.tcp) if args.tcp else None

    if not await healthy(http):
        sys.exit(f"hostile: {args.http} does not answer /healthz/live")

    big = "x" * (args.max_message_bytes * 2 + 100)
    await asyncio.gather(
        probe_ws(args, http, "ws: not JSON before join", "'hello'", ["hello"], {4400}),
        probe_ws(args, http, "ws: a bad token", '{"type":"join","token":"garbage"}',
                 ['{"type":"join","token":"garbage"}'], {4401}),
        probe_ws(args, http, "ws: unknown fields", '{"type":"join","token":"x","zzz":1}',
                 ['{"type":"join","token":"x","zzz":1}'], {4400}),
        probe_ws(args, http, "ws: a message over twice the limit", f"{len(big)} bytes of text", [big], {1009}),
        probe_ws(args, http, "ws: binary before join", "16 bytes binary", [os.urandom(16)], {4400}),
        probe_ws(args, http, "ws: a flood", "500 pings at once", ['{"type":"ping"}'] * 500, {1008}),
        probe_ws(args, http, "ws: no join at all", "nothing", [], {4408}, timeout=args.join_timeout + 10),
        probe_ping_before_join(args, http),
    )
    await probe_slow_headers(http, args.header_timeout)
    host = f"{http[0]}:{http[1]}"
    await probe_http(http, "http: a 10 MB login", (
        f"POST /api/auth/login HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: 10485760\r\nConnection: close\r\n\r\n").encode() + b"{" * 65536, {"413", "400"})
    await probe_http(http, "http: a token in the query string",
                     f"GET /api/billing/export?token=abc HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode(),
                     {"400"})
    await probe_http(http, "http: path traversal",
                     f"GET /../../../etc/passwd HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode(),
                     {"400", "404"})
    await probe_http(http, "http: a garbage request line", b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
                     {"400"})
    await probe_udp_garbage(http, media, 5000)
    if args.metrics:
        metrics = loopback(args.metrics)
        await probe_udp_flood(http, media, metrics, 1000)
        if args.slow_token and args.talker_token:
            await probe_non_reading_ws(http, metrics, args.slow_token, args.talker_token, args.talk_seconds)
    if tcp:
        await probe_tcp_silent(http, tcp, args.tcp_first_message)
        await probe_tcp_many(http, tcp, args.tcp_max_per_ip + 8)

    bad = [r for r in RESULTS if not (r[3] and r[4])]
    print(f"\n{len(RESULTS) - len(bad)} of {len(RESULTS)} probes answered as promised, server healthy throughout"
          if not bad else f"\n{len(bad)} of {len(RESULTS)} probes did not get the promised answer: "
          + ", ".join(r[0] for r in bad))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
