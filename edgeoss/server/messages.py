"""OpenAI chat messages to a harmony conversation, and the request's constraint.

- system and developer messages become harmony's developer instructions; the reasoning effort
  goes into harmony's system message; function tools into the developer message.
- An assistant message's `reasoning_content` (or `reasoning`) becomes an analysis message, kept
  only while no final answer follows it (harmony's rule: the chain of thought stays between tool
  calls of one turn and is dropped in later turns).
- Its `tool_calls` become commentary messages to `functions.NAME`, and a tool message goes back
  in from `functions.NAME` (found by its tool_call_id).
"""

from __future__ import annotations

import json
import openai_harmony as oh

from ..chat.grammar import ToolSpec, reply_grammar
from .schemas import ChatCompletionRequest, ChatMessage, bad_request

# the most reasoning a constrained reply may write before its constrained part, by effort: a real
# model ends its reasoning long before; random weights would otherwise reason up to max_tokens
REASONING_CAP = {"minimal": 256, "low": 512, "medium": 2048, "high": 8192}

EFFORT = {"minimal": oh.ReasoningEffort.LOW, "low": oh.ReasoningEffort.LOW,
          "medium": oh.ReasoningEffort.MEDIUM, "high": oh.ReasoningEffort.HIGH}


def text_of(content, param: str) -> str:
    """A message's text: a string or a list of text parts."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    parts = []
    for i, part in enumerate(content):
        if part.type not in ("text", "input_text", "output_text") or part.text is None:
            raise bad_request(f"content parts of type '{part.type}' are not supported: this model reads text only",
                              param=f"{param}.content.{i}", code="unsupported_content")
        parts.append(part.text)
    return "".join(parts)


def _check_extras(msg: ChatMessage, i: int) -> None:
    extras = msg.unsupported_extras()
    if extras:
        raise bad_request(f"messages.{i}.{extras[0]} is not supported by this server", param=f"messages.{i}.{extras[0]}")


def system_message(effort: str | None) -> oh.Message:
    content = oh.SystemContent.new().with_reasoning_effort(EFFORT[effort or "medium"])
    return oh.Message.from_role_and_content(oh.Role.SYSTEM, content)


def developer_message(instructions: list[str], tools: list) -> oh.Message | None:
    if not instructions and not tools:
        return None
    dev = oh.DeveloperContent.new()
    if instructions:
        dev = dev.with_instructions("\n\n".join(instructions))
    if tools:
        dev = dev.with_function_tools([
            oh.ToolDescription.new(t.name, t.description or "", parameters=t.parameters or {"type": "object", "properties": {}})
            for t in tools])
    return oh.Message.from_role_and_content(oh.Role.DEVELOPER, dev)


def drop_stale_reasoning(messages: list[oh.Message]) -> list[oh.Message]:
    """Harmony's rule: drop analysis messages that a final answer follows."""
    last_final = max((i for i, m in enumerate(messages) if m.author.role == oh.Role.ASSISTANT and m.channel == "final"),
                     default=-1)
    return [m for i, m in enumerate(messages) if not (i < last_final and m.channel == "analysis")]


def tool_call_message(name: str, arguments: str) -> oh.Message:
    return (oh.Message.from_role_and_content(oh.Role.ASSISTANT, arguments).with_channel("commentary")
            .with_recipient(f"functions.{name}").with_content_type("<|constrain|>json"))


def tool_result_message(name: str, text: str) -> oh.Message:
    return (oh.Message.from_author_and_content(oh.Author.new(oh.Role.TOOL, f"functions.{name}"), text)
            .with_recipient("assistant").with_channel("commentary"))


def chat_messages(req: ChatCompletionRequest) -> list[oh.Message]:
    """The harmony conversation (system, developer, then the turns) of a chat request."""
    instructions, turns = [], []
    call_names: dict[str, str] = {}
    for i, m in enumerate(req.messages):
        _check_extras(m, i)
        text = text_of(m.content, f"messages.{i}")
        if m.role in ("system", "developer"):
            instructions.append(text)
        elif m.role == "user":
            turns.append(oh.Message.from_role_and_content(oh.Role.USER, text))
        elif m.role == "assistant":
            reasoning = m.reasoning_content or m.reasoning
            if reasoning:
                turns.append(oh.Message.from_role_and_content(oh.Role.ASSISTANT, reasoning).with_channel("analysis"))
            if text:
                turns.append(oh.Message.from_role_and_content(oh.Role.ASSISTANT, text).with_channel("final"))
            for call in m.tool_calls or []:
                call_names[call.id] = call.function.name
                turns.append(tool_call_message(call.function.name, call.function.arguments))
        else:  # tool
            if m.tool_call_id not in call_names:
                raise bad_request(f"messages.{i} answers tool call '{m.tool_call_id}', which no earlier assistant "
                                  "message made", param=f"messages.{i}.tool_call_id")
            turns.append(tool_result_message(call_names[m.tool_call_id], text))
    effort = req.reasoning_effort or (req.reasoning.effort if req.reasoning else None)
    head = [system_message(effort)]
    dev = developer_message(instructions, [t.function for t in req.tools or []])
    if dev is not None:
        head.append(dev)
    return head + drop_stale_reasoning(turns)


def reply_constraint(tools: list, choice: str, named: str | None, fmt: str, schema, effort: str,
                     max_tokens: int, schema_param: str) -> str | None:
    """The lark grammar a reply must follow, or None when nothing is enforced; shared by both
    APIs. tools: (name, JSON schema of its arguments, strict); choice: auto, none or required,
    or `named`, a function that must be called; fmt: text, json_object or json_schema (schema,
    whose absence is an error about `schema_param`)."""
    if named is not None:
        chosen = [t for t in tools if t[0] == named]
        if not chosen:
            raise bad_request(f"tool_choice names function '{named}', which is not in tools", param="tool_choice")
        calls = "required"
    elif choice == "required" and not tools:
        raise bad_request("tool_choice 'required' needs at least one tool", param="tool_choice")
    else:
        chosen, calls = tools, choice if tools else "none"
    strict = any(t[2] for t in chosen)
    # free text unless something is enforced: a format, a required call, a strict tool, or no tools allowed
    if fmt == "text" and (calls == "auto" and not strict or calls == "none" and not tools):
        return None
    if fmt == "json_schema":
        if schema is None:
            raise bad_request(f"response format json_schema needs {schema_param}", param=schema_param)
        json.dumps(schema)
    return reply_grammar(final={"text": "text", "json_object": "json", "json_schema": "schema"}[fmt],
                         final_schema=schema if fmt == "json_schema" else None,
                         tools=[ToolSpec(name, params) for name, params, _ in chosen], calls=calls,
                         analysis_tokens=reasoning_budget(effort or "medium", max_tokens))


def chat_constraint(req: ChatCompletionRequest, max_tokens: int) -> str | None:
    """The grammar of a chat completion's reply (reply_constraint), or None."""
    choice = req.tool_choice or "auto"
    rf = req.response_format
    return reply_constraint(
        [(t.function.name, t.function.parameters, bool(t.function.strict)) for t in req.tools or []],
        choice if isinstance(choice, str) else "required",
        None if isinstance(choice, str) else choice.function.name,
        rf.type if rf else "text", rf.json_schema.schema_ if rf and rf.json_schema else None,
        req.reasoning_effort or (req.reasoning.effort if req.reasoning else None), max_tokens,
        "response_format.json_schema.schema")


def reasoning_budget(effort: str, max_tokens: int) -> int:
    """Tokens of reasoning a constrained reply may write: its effort's cap, and at most half of
    max_tokens (the rest is for the answer or the call)."""
    return max(1, min(REASONING_CAP[effort], max_tokens // 2))
