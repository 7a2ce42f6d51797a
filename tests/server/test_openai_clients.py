"""The server as apps and agents meet it: the official `openai` client and the Agents SDK, on a
real process. Random weights write noise, so what is checked is the shape a client relies on,
and, where a constraint applies, that the output parses and validates."""

import json
from typing import Annotated

import jsonschema
from pydantic import Field


WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather of a city",
    "parameters": {"type": "object", "additionalProperties": False, "required": ["city", "days"],
                   "properties": {"city": {"type": "string", "maxLength": 24},
                                  "days": {"type": "integer", "minimum": 1, "maximum": 7}}}}}


def model_id(client):
    return client.models.list().data[0].id


def test_models_list_names_the_served_model(server, chat_model):
    models = server.client().models.list().data
    assert [m.id for m in models] == [chat_model.name]
    assert server.client().models.retrieve(chat_model.name).id == chat_model.name


def test_chat_not_streamed(server):
    c = server.client()
    r = c.chat.completions.create(model=model_id(c), messages=[{"role": "system", "content": "Be brief."},
                                                               {"role": "user", "content": "Hello"}],
                                  max_tokens=12, seed=3)
    choice = r.choices[0]
    assert choice.finish_reason in ("stop", "length")
    assert choice.message.role == "assistant"
    assert r.usage.completion_tokens <= 12 and r.usage.prompt_tokens > 20
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    for text in (choice.message.content or "", getattr(choice.message, "reasoning_content", None) or ""):
        assert "<|" not in text  # harmony's markup never leaks into what a client shows


def test_chat_streamed_matches_not_streamed_with_the_same_seed(server):
    c = server.client()
    kw = dict(model=model_id(c), messages=[{"role": "user", "content": "Count to three"}], max_tokens=16,
              seed=11, temperature=0.8)
    whole = c.chat.completions.create(**kw)
    chunks = list(c.chat.completions.create(stream=True, stream_options={"include_usage": True}, **kw))
    content = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    reasoning = "".join(getattr(ch.choices[0].delta, "reasoning_content", None) or "" for ch in chunks if ch.choices)
    assert content == (whole.choices[0].message.content or "")
    assert reasoning == (getattr(whole.choices[0].message, "reasoning_content", None) or "")
    assert [ch.choices[0].finish_reason for ch in chunks if ch.choices][-1] == whole.choices[0].finish_reason
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    # the second run of the same prompt reused it from the prefix cache
    assert chunks[-1].usage.prompt_tokens_details.cached_tokens == whole.usage.prompt_tokens - 1


def test_tool_loop_with_required_tool_choice(server):
    c = server.client()
    messages = [{"role": "user", "content": "What is the weather in Paris this week?"}]
    r = c.chat.completions.create(model=model_id(c), messages=messages, tools=[WEATHER], tool_choice="required",
                                  max_tokens=600, reasoning_effort="low", seed=1)
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls"
    (call,) = choice.message.tool_calls
    assert call.function.name == "get_weather" and call.id.startswith("call_")
    jsonschema.validate(json.loads(call.function.arguments), WEATHER["function"]["parameters"])
    # the call and its result go back in; the chain of thought of this turn with them
    messages.append({"role": "assistant", "content": None, "tool_calls": [call.model_dump()],
                     "reasoning_content": getattr(choice.message, "reasoning_content", None)})
    messages.append({"role": "tool", "tool_call_id": call.id, "content": json.dumps({"temperature_c": 21})})
    again = c.chat.completions.create(model=model_id(c), messages=messages, tools=[WEATHER], tool_choice="none",
                                      max_tokens=8, seed=2, reasoning_effort="low")
    assert again.choices[0].finish_reason in ("stop", "length")
    assert not again.choices[0].message.tool_calls
    # everything up to the call was kept from the first request
    assert again.usage.prompt_tokens_details.cached_tokens >= r.usage.prompt_tokens


def test_streamed_tool_call_arguments_arrive_as_deltas(server):
    c = server.client()
    stream = c.chat.completions.create(model=model_id(c), messages=[{"role": "user", "content": "Weather in Oslo?"}],
                                       tools=[WEATHER], tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                       max_tokens=600, reasoning_effort="low", seed=5, stream=True)
    calls, finish, pieces = {}, None, 0
    for chunk in stream:
        delta = chunk.choices[0].delta
        for tc in delta.tool_calls or []:
            entry = calls.setdefault(tc.index, {"name": None, "arguments": ""})
            if tc.function.name:
                entry["name"] = tc.function.name
            entry["arguments"] += tc.function.arguments or ""
            pieces += 1
        finish = chunk.choices[0].finish_reason or finish
    assert finish == "tool_calls"
    assert list(calls) == [0] and calls[0]["name"] == "get_weather" and pieces > 3
    jsonschema.validate(json.loads(calls[0]["arguments"]), WEATHER["function"]["parameters"])


def test_json_schema_response_format_validates(server):
    schema = {"type": "object", "additionalProperties": False, "required": ["answer", "confidence"],
              "properties": {"answer": {"type": "string", "maxLength": 30},
                             "confidence": {"type": "integer", "minimum": 0, "maximum": 100}}}
    c = server.client()
    for seed in (1, 2):
        r = c.chat.completions.create(model=model_id(c), messages=[{"role": "user", "content": "Answer in JSON"}],
                                      response_format={"type": "json_schema",
                                                       "json_schema": {"name": "answer", "schema": schema, "strict": True}},
                                      max_tokens=600, reasoning_effort="low", seed=seed)
        assert r.choices[0].finish_reason == "stop"
        jsonschema.validate(json.loads(r.choices[0].message.content), schema)


def test_json_object_response_format_parses(server):
    c = server.client()
    r = c.chat.completions.create(model=model_id(c), messages=[{"role": "user", "content": "Reply with JSON"}],
                                  response_format={"type": "json_object"}, max_tokens=800, seed=4,
                                  reasoning_effort="low")
    if r.choices[0].finish_reason == "stop":
        assert isinstance(json.loads(r.choices[0].message.content), dict)
    else:  # random weights may write one long string: what came out is still the start of an object
        assert r.choices[0].finish_reason == "length" and r.choices[0].message.content.startswith("{")


def test_completions_raw_prompt(server):
    c = server.client()
    r = c.completions.create(model=model_id(c), prompt="The capital of France is", max_tokens=6, temperature=0)
    again = c.completions.create(model=model_id(c), prompt="The capital of France is", max_tokens=6, temperature=0)
    assert r.choices[0].text == again.choices[0].text and r.usage.completion_tokens <= 6
    streamed = "".join(ch.choices[0].text for ch in c.completions.create(
        model=model_id(c), prompt="The capital of France is", max_tokens=6, temperature=0, stream=True) if ch.choices)
    assert streamed == r.choices[0].text


def test_responses_function_call_round_trip(server):
    c = server.client()
    tool = {"type": "function", **WEATHER["function"]}
    first = c.responses.create(model=model_id(c), input="Weather in Rome for 3 days?", tools=[tool],
                               tool_choice="required", reasoning={"effort": "low"}, max_output_tokens=600)
    calls = [item for item in first.output if item.type == "function_call"]
    assert first.status == "completed" and len(calls) == 1 and calls[0].name == "get_weather"
    jsonschema.validate(json.loads(calls[0].arguments), tool["parameters"])
    second = c.responses.create(model=model_id(c), previous_response_id=first.id, tools=[tool], tool_choice="none",
                                input=[{"type": "function_call_output", "call_id": calls[0].call_id,
                                        "output": json.dumps({"sky": "clear"})}], max_output_tokens=8,
                                reasoning={"effort": "low"})
    assert second.status in ("completed", "incomplete") and second.previous_response_id == first.id
    assert not [item for item in second.output if item.type == "function_call"]
    assert second.usage.input_tokens_details.cached_tokens >= first.usage.input_tokens
    assert c.responses.retrieve(second.id).id == second.id


def test_responses_stream_events(server):
    c = server.client()
    events = list(c.responses.create(model=model_id(c), input="Hi", max_output_tokens=10, stream=True))
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete")
    assert [e.sequence_number for e in events] == sorted(e.sequence_number for e in events)
    final = events[-1].response
    assert final.usage.output_tokens <= 10


def test_agents_sdk_runs_a_function_tool(server):
    import agents
    from openai import AsyncOpenAI
    from openai.types.shared import Reasoning
    calls = []

    @agents.function_tool
    def get_weather(city: Annotated[str, Field(max_length=24)]) -> str:
        """Current weather of a city."""
        calls.append(city)
        return f"sunny in {city}"

    client = AsyncOpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)
    model = agents.OpenAIResponsesModel(model=model_id(server.client()), openai_client=client)
    agent = agents.Agent(name="weather", instructions="Use the tool.", tools=[get_weather], model=model,
                         model_settings=agents.ModelSettings(tool_choice="required", max_tokens=2000,
                                                                             reasoning=Reasoning(effort="low")),
                         tool_use_behavior="stop_on_first_tool")
    agents.set_tracing_disabled(True)
    result = agents.Runner.run_sync(agent, "Weather in Lima?", max_turns=3)
    assert len(calls) == 1 and isinstance(calls[0], str)
    assert result.final_output == f"sunny in {calls[0]}"


def test_stop_strings_cut_the_text(server):
    c = server.client()
    kw = dict(model=model_id(c), prompt="Once upon a time", max_tokens=24, temperature=0)
    text = c.completions.create(**kw).choices[0].text
    stop = text[len(text) // 2: len(text) // 2 + 3]
    assert len(text) > 6 and stop.strip()
    cut = c.completions.create(stop=[stop, "never-there"], **kw).choices[0]
    assert cut.text == text[:text.index(stop)] and cut.finish_reason == "stop"
    streamed = [ch.choices[0] for ch in c.completions.create(stop=stop, stream=True, **kw) if ch.choices]
    assert "".join(ch.text for ch in streamed) == cut.text and streamed[-1].finish_reason == "stop"


def test_next_turn_runs_only_what_it_adds(server):
    """After a reply, the server brings the conversation as the client will send it back into the
    prefix cache: the next turn runs only the new user message."""
    import httpx

    from harness import wait_for
    c = server.client()

    def preparing() -> float:
        text = httpx.get(server.url + "/metrics").text
        return float(next(line.split()[1] for line in text.splitlines()
                          if line.startswith("edgeoss_requests_preparing ")))
    for stream in (False, True):
        messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": f"Hello ({stream})"}]
        kw = dict(model=model_id(c), max_tokens=40, seed=9, temperature=1.0, reasoning_effort="low")
        if stream:
            chunks = [ch for ch in c.chat.completions.create(messages=messages, stream=True, **kw) if ch.choices]
            reply = {"role": "assistant", "content": "".join(ch.choices[0].delta.content or "" for ch in chunks)}
            assert chunks[-1].choices[0].finish_reason in ("stop", "length")
        else:
            first = c.chat.completions.create(messages=messages, **kw)
            reply = {"role": "assistant", "content": first.choices[0].message.content}
        assert wait_for(lambda: preparing() == 0, timeout=60)
        question = "And a second question about the sea?"
        second = c.chat.completions.create(messages=messages + [reply, {"role": "user", "content": question}], **kw)
        uncached = second.usage.prompt_tokens - second.usage.prompt_tokens_details.cached_tokens
        assert uncached <= 30, (stream, second.usage)
