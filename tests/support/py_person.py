"""A python-socketio client that logs in and acknowledges direct messages with `chat_ack`.

Usage: py_person.py URL USER_ID DEVICE_ID {websocket|polling} [SECONDS]

Logs in with `login {userId, deviceId}` on every connection; for every `chat` event (one message
or a batch), emits `chat_ack {ids}` with the ids it carried and reports the answer. Prints one
JSON object per line on stdout: {"event": "login", "ack": ...}, {"event": "chat", "messages":
[...]}, {"event": "chat_ack", "ids": [...], "answer": ...}. Exits after SECONDS (default 60) or
when stdin closes, whichever comes first.
"""

import json
import sys
import threading
import time

import socketio


def say(event, **fields):
    print(json.dumps({"event": event, **fields}), flush=True)


def main():
    url, user_id, device_id, transport = sys.argv[1:5]
    seconds = float(sys.argv[5]) if len(sys.argv) > 5 else 60.0
    client = socketio.Client(reconnection_delay=0.1, reconnection_delay_max=0.5)

    @client.event
    def connect():
        say("connect", sid=client.sid)
        client.emit(
            "login",
            {"userId": user_id, "deviceId": device_id},
            callback=lambda ack: say("login", ack=ack),
        )

    @client.on("chat")
    def chat(payload):
        messages = payload if isinstance(payload, list) else [payload]
        say("chat", messages=messages)
        ids = [m["id"] for m in messages]
        client.emit(
            "chat_ack",
            {"ids": ids},
            callback=lambda answer: say("chat_ack", ids=ids, answer=answer),
        )

    client.connect(url, transports=[transport])
    deadline = time.monotonic() + seconds
    stdin_closed = threading.Event()
    threading.Thread(target=lambda: (sys.stdin.read(), stdin_closed.set()), daemon=True).start()
    while time.monotonic() < deadline and not stdin_closed.is_set():
        time.sleep(0.05)
    client.disconnect()


if __name__ == "__main__":
    main()
