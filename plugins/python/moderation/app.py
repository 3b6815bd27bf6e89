"""ioplex plugin in Python (componentize-py): moderation for chat rooms.

- transform-event: a `message` whose text holds a blocked word is rejected (the sender's ack carries the
  reason and nobody receives it); a shouted message (all capitals, 12+ letters) is delivered in lower
  case; anything else passes untouched.
- authorize-join: rooms whose names hold a blocked word are refused.

Settings (the plugin's manifest):
  blocked   comma-separated words (default: "scam,spam")
"""

import json

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import host, types

DEFAULT_BLOCKED = "scam,spam"
SHOUTING_LETTERS = 12


def blocked_words() -> list[str]:
    listed = host.setting("blocked") or DEFAULT_BLOCKED
    return [w.strip().lower() for w in listed.split(",") if w.strip()]


def first_blocked(text: str) -> str | None:
    lowered = text.lower()
    return next((w for w in blocked_words() if w in lowered), None)


def shouting(text: str) -> bool:
    letters = [c for c in text if c.isalpha()]
    return len(letters) >= SHOUTING_LETTERS and all(c.isupper() for c in letters)


class AuthorizeJoin(exports.AuthorizeJoin):
    def authorize_join(self, request: types.JoinRequest) -> None:
        word = first_blocked(request.room)
        if word is not None:
            raise Err(f'room name "{request.room}" is not allowed')


class TransformEvent(exports.TransformEvent):
    def transform_event(self, event: types.ClientEvent) -> types.EventAction:
        if event.body.name != "message":
            return types.EventAction_Pass()
        args = json.loads(event.body.args_json)
        if not args:
            return types.EventAction_Pass()
        # The text is the first argument, or its `text` field.
        first = args[0]
        text = first.get("text") if isinstance(first, dict) else first
        if not isinstance(text, str):
            return types.EventAction_Pass()
        word = first_blocked(text)
        if word is not None:
            host.log(host.LogLevel.INFO, f"blocked a message from {event.socket.id}")
            raise Err(f'message blocked: "{word}" is not allowed here')
        if not shouting(text):
            return types.EventAction_Pass()
        calm = text.lower()
        if isinstance(first, dict):
            first["text"] = calm
        else:
            args[0] = calm
        body = types.EventBody(
            name=event.body.name,
            args_json=json.dumps(args, separators=(",", ":")),
            attachments=event.body.attachments,
        )
        return types.EventAction_Rewrite(body)
