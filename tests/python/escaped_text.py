"""Says a long text through python-socketio, which writes JSON with Python's default
ensure_ascii (every non-ASCII character as a \\uXXXX escape, an emoji as two), and reports what
came back as one JSON line: the join and say acks, whether the room echoed the text, and the size
of the packet on the wire.

Usage: escaped_text.py <worker url> <websocket|polling> <characters>
"""

import json
import sys
import threading

import socketio


def main():
    url, transport, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    text = "\U0001F600" * count
    client = socketio.Client(reconnection=False)
    echoed = threading.Event()
    report = {"transport": transport, "echo": False}

    @client.on("message")
    def on_message(message):
        if message.get("event") == "broadcast_say" and message.get("data", {}).get("text") == text:
            report["echo"] = True
            echoed.set()

    @client.on("disconnect")
    def on_disconnect(*_):
        report.setdefault("disconnected", True)
        echoed.set()

    try:
        client.connect(f"{url}?roomid=python", transports=[transport], wait_timeout=10)
        report["join"] = client.call("join", {"username": "python"}, timeout=10)
        report["wire_bytes"] = len("42" + json.dumps(["say", {"text": text}], separators=(",", ":")))
        report["say"] = client.call("say", {"text": text}, timeout=10)
        echoed.wait(10)
    except Exception as err:  # the report says what failed; the caller asserts
        report["error"] = f"{type(err).__name__}: {err}"
    finally:
        if client.connected:
            client.disconnect()
    print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main()
