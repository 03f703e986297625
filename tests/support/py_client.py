"""A python-socketio client for the end-to-end tests: joins a room and reports what happens.

Usage: py_client.py URL ROOM USERNAME {sync|async} {websocket|polling} [SECONDS]

Prints one JSON object per line on stdout: {"event": "connect"}, {"event": "disconnect",
"reason": ...}, {"event": "message", "data": {...}}, {"event": "join_ack", "ack": ...}. Exits
after SECONDS (default 60) or when stdin closes, whichever comes first, so a test that dies
never leaves it behind.
"""

import asyncio
import json
import sys
import threading
import time

import socketio


_print_lock = threading.Lock()


def say(event, **fields):
    # The sync client calls handlers from several threads: one whole line at a time.
    line = json.dumps({"event": event, **fields})
    with _print_lock:
        print(line, flush=True)


def run_sync(url, room, username, transport, seconds):
    client = socketio.Client(reconnection_delay=0.1, reconnection_delay_max=0.5)

    @client.event
    def connect():
        say("connect", sid=client.sid)
        client.emit("join", {"username": username}, callback=lambda ack: say("join_ack", ack=ack))

    @client.event
    def disconnect(reason=None):
        say("disconnect", reason=str(reason))

    @client.on("message")
    def message(data):
        say("message", data=data)

    client.connect(f"{url}?roomid={room}", transports=[transport])
    deadline = time.monotonic() + seconds
    stdin_closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stdin_closed.set()), daemon=True).start()
    while time.monotonic() < deadline and not stdin_closed.is_set():
        time.sleep(0.05)
    client.disconnect()


async def run_async(url, room, username, transport, seconds):
    client = socketio.AsyncClient(reconnection_delay=0.1, reconnection_delay_max=0.5)

    @client.event
    async def connect():
        say("connect", sid=client.sid)
        await client.emit("join", {"username": username}, callback=lambda ack: say("join_ack", ack=ack))

    @client.event
    async def disconnect(reason=None):
        say("disconnect", reason=str(reason))

    @client.on("message")
    async def message(data):
        say("message", data=data)

    await client.connect(f"{url}?roomid={room}", transports=[transport])
    loop = asyncio.get_running_loop()
    stdin_closed = loop.run_in_executor(None, sys.stdin.read)
    try:
        await asyncio.wait_for(stdin_closed, timeout=seconds)
    except asyncio.TimeoutError:
        pass
    await client.disconnect()


def main():
    url, room, username, mode, transport = sys.argv[1:6]
    seconds = float(sys.argv[6]) if len(sys.argv) > 6 else 60.0
    if mode == "sync":
        run_sync(url, room, username, transport, seconds)
    else:
        asyncio.run(run_async(url, room, username, transport, seconds))


if __name__ == "__main__":
    main()
