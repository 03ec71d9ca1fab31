#!/usr/bin/python3
# SPDX-License-Identifier: MIT
"""An independent WebSocket client for the gateway's end-to-end test, on Debian's
python3-websockets (not on anything this project wrote).

    ws_client.py URL PREFIX SESSIONS FRAMES FRAME_BYTES

Runs SESSIONS concurrent sessions "PREFIX-0" ... on URL (ws://HOST:PORT/v1/stream): a `start`
text message, FRAMES binary frames of FRAME_BYTES every 20 ms (real time), an `end`, then
reads until the server closes. Frame i of session S is frame_bytes(S, i) below, printable
ASCII, so that a test can rebuild it and compare what Kafka holds byte for byte.

Prints one JSON line per session: {"session_id", "close_code", "close_reason", "acks"} and
exits 0 if every session was acked and closed with 1000, 1 otherwise, 2 on bad arguments.
"""
import asyncio
import json
import sys

import websockets


def frame_bytes(session_id: str, index: int, size: int) -> bytes:
    """Frame `index` of `session_id`: "<id>:<index, 6 digits>:" then letters a..z."""
    head = f"{session_id}:{index:06d}:".encode()
    body = bytes(ord("a") + (index + k) % 26 for k in range(max(0, size - len(head))))
    return (head + body)[:size]


async def session(url: str, session_id: str, frames: int, size: int) -> dict:
    acks = []
    async with websockets.connect(url, max_size=None, compression=None) as ws:
        await ws.send(json.dumps({"type": "start", "session_id": session_id,
                                  "sample_rate": 16000, "codec": "pcm16"}))
        acks.append(json.loads(await ws.recv()))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in range(frames):
            # Real time: frame i leaves at t0 + 20 ms * i.
            delay = t0 + 0.02 * i - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            await ws.send(frame_bytes(session_id, i, size))
        await ws.send(json.dumps({"type": "end"}))
        try:
            while True:
                msg = await ws.recv()
                if isinstance(msg, str):
                    acks.append(json.loads(msg))
        except websockets.ConnectionClosed:
            pass
        return {"session_id": session_id, "close_code": ws.close_code,
                "close_reason": ws.close_reason, "acks": acks}


async def main(url: str, prefix: str, sessions: int, frames: int, size: int) -> int:
    results = await asyncio.gather(*(session(url, f"{prefix}-{s}", frames, size)
                                     for s in range(sessions)))
    ok = True
    for r in results:
        print(json.dumps(r), flush=True)
        end_acked = any(a.get("type") == "ack" and a.get("of") == "end" for a in r["acks"])
        ok = ok and r["close_code"] == 1000 and end_acked
    return 0 if ok else 1


if __name__ == "__main__":
    if len(sys.argv) != 6:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    sys.exit(asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]),
                              int(sys.argv[5]))))
