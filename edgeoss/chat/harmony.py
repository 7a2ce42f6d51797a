"""Harmony chat: rendering conversations and parsing the model's stream, via openai-harmony.

gpt-oss speaks the harmony format: the assistant writes its reasoning on the `analysis`
channel, tool calls on `commentary` (addressed with a recipient and ended by <|call|>) and
the answer on `final`, ended by <|return|>. We stop only on <|return|> and <|call|>: an
<|end|> merely closes one message (e.g. the reasoning) and the turn goes on.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Iterator

import openai_harmony as oh

REASONING = {"low": oh.ReasoningEffort.LOW, "medium": oh.ReasoningEffort.MEDIUM, "high": oh.ReasoningEffort.HIGH}


@dataclass
class Delta:
    """A piece of the assistant's reply as it streams."""

    channel: str | None      # "analysis", "commentary", "final" (None before a channel is named)
    text: str
    recipient: str | None = None  # set on tool calls, e.g. "functions.get_weather"


@dataclass
class Chat:
    """A conversation with a loaded model. `send` streams the reply and keeps the history.

    The conversation owns a sequence of the model (its KV cache), so several chats share one
    loaded model, and a turn runs only the tokens its prompt adds. When a turn ends, the
    history is re-rendered as the next prompt will show it (harmony drops the reply's analysis
    and ends it with <|end|>) and brought into the cache in the background while the user
    reads, unless prepare_next_turn is False; `usage` counts the last turn's tokens."""

    model: object
    reasoning: str = "medium"
    instructions: str | None = None          # developer message (the "system prompt" of apps)
    tools: list[oh.ToolDescription] = field(default_factory=list)
    messages: list[oh.Message] = field(default_factory=list)
    last_stop_token: int | None = None
    last_tokens: list[int] = field(default_factory=list)   # the raw tokens of the last reply
    prepare_next_turn: bool = True

    def __post_init__(self):
        if self.reasoning not in REASONING:
            raise ValueError(f"reasoning must be one of {', '.join(REASONING)}")
        enc = self.model.tokenizer
        if enc is None:
            raise ValueError("this model was converted without a tokenizer (--no-tokenizer); chat needs one: "
                             "re-convert it from a checkpoint that has tokenizer.json")
        self.encoding: oh.HarmonyEncoding = enc
        self.sequence = self.model.new_sequence()
        self._preparing: threading.Thread | None = None

    @property
    def usage(self):
        """The last turn's token counts: prompt_tokens, cached_tokens (kept, not run) and
        completion_tokens (an edgeoss.engine.sequence.Usage)."""
        return self.sequence.usage

    def wait(self) -> None:
        """Wait for the cache to finish preparing for this turn (if it was)."""
        if self._preparing is not None:
            self._preparing.join()
            self._preparing = None

    def _prepare(self, history: list[int]) -> None:
        try:
            self.model.prefill(history, self.sequence)
        except Exception:  # noqa: BLE001 - only a head start: the next turn runs whatever this did not
            pass

    def _conversation(self) -> oh.Conversation:
        system = oh.SystemContent.new().with_reasoning_effort(REASONING[self.reasoning])
        head = [oh.Message.from_role_and_content(oh.Role.SYSTEM, system)]
        if self.instructions or self.tools:
            dev = oh.DeveloperContent.new()
            if self.instructions:
                dev = dev.with_instructions(self.instructions)
            if self.tools:
                dev = dev.with_function_tools(self.tools)
            head.append(oh.Message.from_role_and_content(oh.Role.DEVELOPER, dev))
        return oh.Conversation.from_messages(head + self.messages)

    def prompt_tokens(self) -> list[int]:
        return self.encoding.render_conversation_for_completion(self._conversation(), oh.Role.ASSISTANT)

    def add_user(self, text: str) -> None:
        self.messages.append(oh.Message.from_role_and_content(oh.Role.USER, text))

    def add_tool_result(self, tool_name: str, text: str) -> None:
        msg = oh.Message.from_author_and_content(oh.Author.new(oh.Role.TOOL, tool_name), text)
        self.messages.append(msg.with_recipient("assistant").with_channel("commentary"))

    def stream(self, max_tokens: int = 2048, **sampling) -> Iterator[Delta]:
        """Generate the assistant's turn after the current history, yielding text as it comes.
        The parsed messages are appended to the history when the turn ends."""
        stop = self.encoding.stop_tokens_for_assistant_actions()  # <|return|>, <|call|>
        self.wait()
        parser = oh.StreamableParser(self.encoding, role=oh.Role.ASSISTANT, strict=False)
        self.last_stop_token = None
        self.last_tokens = []
        try:
            for tok in self.model.generate(self.prompt_tokens(), max_tokens=max_tokens, stop=stop,
                                           sequence=self.sequence, **sampling):
                self.last_tokens.append(tok)
                if tok in stop:
                    self.last_stop_token = tok
                parser.process(tok)
                if parser.last_content_delta:
                    yield Delta(parser.current_channel, parser.last_content_delta, parser.current_recipient)
        except (oh.HarmonyError, OverflowError) as e:
            # a model that breaks the format (random weights do) ends its turn here; OverflowError:
            # an id the parser cannot take at all (it reads u32 ids)
            yield Delta(None, f"\n[the model's output left the harmony format: {e}]\n")
        finally:
            try:
                parser.process_eos()
            except oh.HarmonyError:
                pass
            self.messages.extend(parser.messages)
            if self.prepare_next_turn and self.messages:
                history = self.encoding.render_conversation(self._conversation())
                self._preparing = threading.Thread(target=self._prepare, args=(history,), name="edgeoss-chat-prepare")
                self._preparing.start()

    def send(self, text: str, **kwargs) -> Iterator[Delta]:
        self.add_user(text)
        return self.stream(**kwargs)

    def last_tool_call(self) -> oh.Message | None:
        """The assistant's pending tool call, if its turn ended with <|call|>."""
        if self.messages and self.messages[-1].recipient and self.messages[-1].author.role == oh.Role.ASSISTANT:
            return self.messages[-1]
        return None
