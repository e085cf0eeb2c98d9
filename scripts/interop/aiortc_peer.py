#!/usr/bin/env python3
"""One participant of a Teleconsult consultation, played by aiortc (a second, independent WebRTC
implementation): it joins over the signalling WebSocket (protocol 1, docs/signaling.md), publishes
a synthetic VP8 camera (a moving pattern over a red level that identifies it) and a tone,
decodes every video track it receives, and writes what it saw as JSON.

    TELECONSULT_TOKEN=... aiortc_peer.py --ws ws://127.0.0.1:PORT/ws --seconds 60 --out result.json

The join token comes from the environment (not the command line, which every local user can
read in the process list) and is never printed.
A practitioner admits every waiting participant. The run lasts `--seconds` from the first decoded
video frame; `--deadline` bounds the whole run. Output: for each received video track, the frames
decoded, the longest gap between two decoded frames (seconds, monotonic clock) and the
resolution, and the mean red levels of sampled frames (whose video it was); plus the errors seen.
"""

import argparse
import asyncio
import fractions
import json
import math
import os
import sys
import time

import numpy
import websockets
from aiortc import (
    MediaStreamTrack,
    RTCPeerConnection,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import AUDIO_PTIME
from av import AudioFrame, VideoFrame

WIDTH, HEIGHT = 320, 240


class MovingPattern(VideoStreamTrack):
    """A gradient that moves every frame (so the encoder produces real inter frames) in the green
    and blue channels, over a red channel fixed at `signature`: a receiver tells whose video a
    decoded frame is from its mean red."""

    def __init__(self, signature):
        super().__init__()
        self.n = 0
        self.signature = signature
        x = numpy.arange(WIDTH, dtype=numpy.uint16)
        y = numpy.arange(HEIGHT, dtype=numpy.uint16)
        self.base = (x[None, :] + y[:, None]).astype(numpy.uint16)

    async def recv(self):
        pts, time_base = await self.next_timestamp()
        self.n += 1
        shift = (self.n * 4) % 256
        luma = ((self.base + shift) % 256).astype(numpy.uint8)
        red = numpy.full((HEIGHT, WIDTH), self.signature, dtype=numpy.uint8)
        rgb = numpy.stack([red, luma, numpy.roll(255 - luma, self.n, axis=1)], axis=2)
        frame = VideoFrame.from_ndarray(rgb, format="rgb24")
        frame.pts = pts
        frame.time_base = time_base
        return frame


class Tone(MediaStreamTrack):
    """A 440 Hz tone, 20 ms frames of 48 kHz mono."""

    kind = "audio"

    def __init__(self):
        super().__init__()
        self.samples = 0
        self.start = None

    async def recv(self):
        rate = 48000
        count = int(AUDIO_PTIME * rate)
        if self.start is None:
            self.start = time.time()
        else:
            wait = self.start + (self.samples / rate) - time.time()
            if wait > 0:
                await asyncio.sleep(wait)
        t = (numpy.arange(count) + self.samples) / rate
        pcm = (numpy.sin(2 * math.pi * 440 * t) * 3000).astype(numpy.int16)
        frame = AudioFrame.from_ndarray(pcm.reshape(1, -1), format="s16", layout="mono")
        frame.sample_rate = rate
        frame.pts = self.samples
        frame.time_base = fractions.Fraction(1, rate)
        self.samples += count
        return frame


class Peer:
    def __init__(self, args):
        self.args = args
        self.pc = None
        self.ws = None
        self.received = {}  # track key -> stats
        self.video_tracks = 0
        self.first_frame = None
        self.errors = []
        self.role = None
        self.admitted = set()
        # Video sections in each offer received, and the signalling messages by type.
        self.offers = []
        self.messages = {}
        self.done = asyncio.Event()
        self.tasks = []

    async def send(self, message):
        await self.ws.send(json.dumps(message))

    async def consume(self, key, track):
        stats = {
            "frames": 0,
            "max_gap": 0.0,
            "max_gap_at": 0.0,
            "width": 0,
            "height": 0,
            "first": None,
            "last": None,
            "signatures": {},
        }
        self.received[key] = stats
        while True:
            try:
                frame = await track.recv()
            except Exception:  # the track ended (MediaStreamError) or the connection closed
                return
            now = time.monotonic()
            if stats["last"] is not None:
                if now - stats["last"] > stats["max_gap"]:
                    stats["max_gap"] = now - stats["last"]
                    stats["max_gap_at"] = now - stats["first"]
            else:
                stats["first"] = now
            stats["last"] = now
            stats["frames"] += 1
            stats["width"], stats["height"] = frame.width, frame.height
            if stats["frames"] % 5 == 1:
                red = float(frame.to_ndarray(format="rgb24")[:, :, 0].mean())
                sig = str(int(round(red)))
                stats["signatures"][sig] = stats["signatures"].get(sig, 0) + 1
            if self.first_frame is None:
                self.first_frame = now

    def on_track(self, track):
        if track.kind != "video":
            # Drain audio so its jitter buffer never backs up.
            self.tasks.append(asyncio.ensure_future(self.drain(track)))
            return
        # Named now, not when its task first runs: one offer can bring several tracks.
        key = f"video-{self.video_tracks}"
        self.video_tracks += 1
        self.tasks.append(asyncio.ensure_future(self.consume(key, track)))

    async def drain(self, track):
        while True:
            try:
                await track.recv()
            except Exception:
                return

    async def on_offer(self, sdp):
        self.offers.append(sdp.count("m=video"))
        if os.environ.get("AIORTC_PEER_DUMP"):
            with open(f"{os.environ['AIORTC_PEER_DUMP']}-{len(self.offers)}.sdp", "w") as f:
                f.write(sdp)
        if self.pc is None:
            self.pc = RTCPeerConnection()
            self.pc.on("track", self.on_track)
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
            # Our microphone and camera go into the first two of the offer's three recvonly sections
            # (the third is for a screen share, which this peer never sends).
            self.pc.addTrack(Tone())
            self.pc.addTrack(MovingPattern(self.args.signature))
        else:
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        await self.send({"type": "answer", "sdp": self.pc.localDescription.sdp})

    async def handle(self, message):
        kind = message.get("type")
        self.messages[kind] = self.messages.get(kind, 0) + 1
        if kind == "joined":
            self.role = message.get("you", {}).get("role")
        elif kind == "waiting_list" and self.role == "practitioner":
            for p in message.get("participants", []):
                if p["id"] not in self.admitted:
                    self.admitted.add(p["id"])
                    await self.send({"type": "admit", "participant": p["id"]})
        elif kind == "offer":
            await self.on_offer(message["sdp"])
        elif kind == "error":
            self.errors.append(message.get("code", "?"))

    async def keepalive(self):
        while not self.done.is_set():
            await asyncio.sleep(10)
            await self.send({"type": "ping"})

    async def timer(self):
        start = time.monotonic()
        while True:
            now = time.monotonic()
            if self.first_frame is not None and now - self.first_frame >= self.args.seconds:
                break
            if now - start >= self.args.deadline:
                self.errors.append("deadline")
                break
            await asyncio.sleep(0.2)
        self.done.set()

    async def run(self):
        async with websockets.connect(self.args.ws, max_size=1 << 20) as ws:
            self.ws = ws
            await self.send({"type": "join", "token": self.args.token, "protocol": 1})
            reader = asyncio.ensure_future(self.read())
            extra = [asyncio.ensure_future(self.keepalive()), asyncio.ensure_future(self.timer())]
            await self.done.wait()
            # A track that stalled for good shows as a short `seconds` (first to last frame).
            try:
                await self.send({"type": "leave"})
            except Exception:
                pass
            for t in [reader, *extra, *self.tasks]:
                t.cancel()
        if self.pc is not None:
            await self.pc.close()

    async def read(self):
        try:
            async for raw in self.ws:
                await self.handle(json.loads(raw))
        except websockets.ConnectionClosed as closed:
            self.errors.append(f"closed:{closed.code}")
        self.done.set()

    def report(self):
        tracks = {
            key: {
                "frames": s["frames"],
                "max_gap_s": round(s["max_gap"], 3),
                "max_gap_at_s": round(s["max_gap_at"], 3),
                "width": s["width"],
                "height": s["height"],
                "seconds": round((s["last"] - s["first"]), 3) if s["first"] else 0.0,
                # Mean red of sampled frames (rounded) -> how many: whose video this track was.
                "signatures": s["signatures"],
            }
            for key, s in self.received.items()
        }
        return {
            "role": self.role,
            "tracks": tracks,
            "errors": self.errors,
            "offers": self.offers,
            "messages": self.messages,
        }


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ws", required=True)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--deadline", type=float, default=120.0)
    parser.add_argument("--out", required=True)
    parser.add_argument("--signature", type=int, default=128, help="red level of our video (0-255)")
    args = parser.parse_args()
    args.token = os.environ.get("TELECONSULT_TOKEN", "")
    if not args.token:
        parser.error("TELECONSULT_TOKEN is not set")
    peer = Peer(args)
    asyncio.run(peer.run())
    with open(args.out, "w") as f:
        json.dump(peer.report(), f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
