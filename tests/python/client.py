"""python-socketio's client against an ioplex URL, for tests/python-client.test.mjs.

Runs the client contract over one transport: connect, join a room, receive what another client
publishes to it, publish text and then binary attachments with acks, and a refused join. Prints one
JSON object per step on stdout (bytes as hex); the Node test asserts them. Exits non-zero if a step
raised.

    python client.py URL websocket|polling ROOM
"""

import json
import sys
import threading

import socketio


def main() -> None:
    url, transport, room = sys.argv[1], sys.argv[2], sys.argv[3]
    got = []
    arrived = threading.Event()

    def report(step, **fields):
        print(json.dumps({"step": step, **fields}), flush=True)

    sio = socketio.Client(reconnection=False)

    @sio.on("message")
    def on_message(*args):
        got.append([a.hex() if isinstance(a, bytes) else a for a in args])
        arrived.set()

    sio.connect(url, transports=[transport], wait_timeout=10)
    report("connected", sid=sio.get_sid(), transport=sio.transport())

    joined = sio.call("join", room, timeout=5)
    report("joined", ack=joined)

    # Tell the Node side we are ready, then wait for what it publishes to us.
    print(json.dumps({"step": "ready"}), flush=True)
    if not arrived.wait(10):
        raise TimeoutError("nothing arrived from the other client")
    report("received", args=got[0])

    published = sio.call(
        "publish",
        {"room": room, "event": "message", "args": ["from python", {"n": 1}]},
        timeout=5,
    )
    report("published", ack=published)

    binary = sio.call(
        "publish",
        {"room": room, "event": "message", "args": [b"\x00\x01\xfe\xff", {"bin": b"\x07"}]},
        timeout=5,
    )
    report("published-binary", ack=binary)

    refused = sio.call("join", "", timeout=5)
    report("refused", ack=refused)

    sio.disconnect()
    report("disconnected")


if __name__ == "__main__":
    main()
