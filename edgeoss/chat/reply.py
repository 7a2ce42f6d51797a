"""A harmony reply, token by token, as the pieces an API returns: reasoning, content, tool calls.

The analysis channel is reasoning; the final channel (and a commentary message with no
recipient, a preamble) is content; a message addressed to a recipient (`to=functions.NAME`) is
a tool call whose content is its arguments. Channel names and special tokens never reach the
content. A model that leaves the harmony format (random weights do) does not break the reply:
from there on its plain text is content.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import openai_harmony as oh

SPECIAL_FROM = 199998  # ids from here on are harmony's special tokens
HEADER_LIMIT = 64      # a message header (channel, recipient, content type) is a few tokens: past this
                       # many without a message starting, the model is not writing harmony


@dataclass
class Piece:
    kind: str               # "reasoning", "content", "tool_call" (a call starts: name) or "arguments"
    text: str = ""
    call: int = -1          # which tool call, for "tool_call" and "arguments"


@dataclass
class ToolCall:
    name: str                # without the "functions." namespace
    arguments: str = ""
    recipient: str = ""      # as the model addressed it, e.g. "functions.get_weather"


@dataclass
class Reply:
    reasoning: str = ""
    content: str = ""
    tool_calls: list[ToolCall] = field(default_factory=list)


class ReplyParser:
    """Feed it the reply's tokens (`push`), then `finish()`; `reply` holds everything so far."""

    def __init__(self, encoding: oh.HarmonyEncoding):
        self.encoding = encoding
        self.parser = oh.StreamableParser(encoding, role=oh.Role.ASSISTANT, strict=False)
        self.reply = Reply()
        self._call_message = -1   # index (in parser.messages) of the message the last call is in
        self._raw: list[int] | None = None  # set once the output left the format
        self._raw_sent = 0
        self._unshown: list[int] = []  # tokens since the last delta or finished message

    def _add(self, kind: str, text: str) -> list[Piece]:
        if not text:
            return []
        if kind == "reasoning":
            self.reply.reasoning += text
        else:
            self.reply.content += text
        return [Piece(kind, text)]

    def _raw_text(self, final: bool = False) -> list[Piece]:
        text = self.encoding.decode([t for t in self._raw if 0 <= t < SPECIAL_FROM], errors="replace")
        if not final:  # a character split across tokens: wait for the rest
            text = text.rstrip("\ufffd")
        new, self._raw_sent = text[self._raw_sent:], max(self._raw_sent, len(text))
        return self._add("content", new)

    def push(self, token: int) -> list[Piece]:
        if self._raw is None and not 0 <= token < SPECIAL_FROM + (1 << 16):
            # not an id of this vocabulary at all (the harmony parser takes u32 ids and raises
            # OverflowError past them): the output left the format, as for any unknown token
            self._raw = self._unshown
        if self._raw is not None:
            self._raw.append(token)
            return self._raw_text()
        done = len(self.parser.messages)
        try:
            self.parser.process(token)
        except oh.HarmonyError:
            self._raw = self._unshown + [token]
            return self._raw_text()
        delta = self.parser.last_content_delta
        if not delta:
            self._unshown = [] if len(self.parser.messages) > done else self._unshown + [token]
            if len(self._unshown) > HEADER_LIMIT and not self.parser.current_content:
                self._raw = self._unshown  # stream it as text now rather than at the end
                return self._raw_text()
            return []
        self._unshown = []
        recipient = self.parser.current_recipient
        if recipient and recipient != "assistant":
            out = []
            index = len(self.parser.messages)
            if index != self._call_message:  # a new call starts
                self._call_message = index
                name = recipient.split(".", 1)[1] if recipient.startswith("functions.") else recipient
                self.reply.tool_calls.append(ToolCall(name=name, recipient=recipient))
                out.append(Piece("tool_call", name, len(self.reply.tool_calls) - 1))
            self.reply.tool_calls[-1].arguments += delta
            out.append(Piece("arguments", delta, len(self.reply.tool_calls) - 1))
            return out
        return self._add("reasoning" if self.parser.current_channel == "analysis" else "content", delta)

    def finish(self) -> list[Piece]:
        """The end of the reply: whatever was held back. Tokens that never formed a message (a
        header that never ended: random weights) are content, as plain text."""
        if self._raw is None and self._unshown and all(0 <= t < SPECIAL_FROM for t in self._unshown) \
                and not self.parser.current_content:
            self._raw = self._unshown
        if self._raw is not None:
            return self._raw_text(final=True)
        try:
            self.parser.process_eos()
        except oh.HarmonyError:
            pass
        return []
