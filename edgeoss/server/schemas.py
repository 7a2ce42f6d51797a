"""Request bodies of the OpenAI API as pydantic models, and the error shape of its answers.

Every field OpenAI defines for these routes is named here: what we support is used, what we do
not gets a 400 that says so (never silently ignored), and a field OpenAI does not define is a
400 too, as OpenAI answers it ("Unrecognized request argument supplied").
"""

from __future__ import annotations

from typing import Any, Literal, Optional, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class APIError(Exception):
    """An answer in OpenAI's error shape: {"error": {"message", "type", "param", "code"}}."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 type: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.type = type or ("invalid_request_error" if status < 500 else "server_error")
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> APIError:
    return APIError(400, message, param=param, code=code)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Lenient(BaseModel):
    """Message parts echo back what a server returned before (`refusal: null`, `annotations: []`):
    an extra field is taken when empty and refused when it carries something we would drop."""

    model_config = ConfigDict(extra="allow")

    def unsupported_extras(self) -> list[str]:
        return [k for k, v in (self.model_extra or {}).items() if v not in (None, "", [], {})]


# -- chat completions -----------------------------------------------------------------------------
class FunctionDef(Strict):
    name: str = Field(pattern=r"^[a-zA-Z0-9_-]{1,64}$")
    description: Optional[str] = None
    parameters: Optional[dict[str, Any]] = None
    strict: Optional[bool] = None


class Tool(Strict):
    type: Literal["function"]
    function: FunctionDef


class NamedFunction(Strict):
    name: str


class NamedToolChoice(Strict):
    type: Literal["function"]
    function: NamedFunction


class ToolCallFunction(Lenient):
    name: str
    arguments: str


class ToolCall(Lenient):
    id: str
    type: Literal["function"] = "function"
    function: ToolCallFunction


class ContentPart(Lenient):
    type: str
    text: Optional[str] = None


class ChatMessage(Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: Union[str, list[ContentPart], None] = None
    name: Optional[str] = None
    tool_calls: Optional[list[ToolCall]] = None
    tool_call_id: Optional[str] = None
    # the assistant's reasoning, as llama.cpp, vLLM and LM Studio return it (and accept it back)
    reasoning_content: Optional[str] = None
    reasoning: Optional[str] = None
    refusal: Optional[str] = None


class JSONSchemaFormat(Strict):
    name: str = "response"
    description: Optional[str] = None
    schema_: Optional[dict[str, Any]] = Field(default=None, alias="schema")
    strict: Optional[bool] = None


class ResponseFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: Optional[JSONSchemaFormat] = None


class StreamOptions(Strict):
    include_usage: Optional[bool] = None
    include_obfuscation: Optional[bool] = None


class Reasoning(Strict):
    effort: Optional[Literal["minimal", "low", "medium", "high"]] = None
    summary: Optional[str] = None
    generate_summary: Optional[str] = None


class SamplingFields(Strict):
    model: str
    temperature: Optional[float] = Field(default=None, ge=0, le=2)
    top_p: Optional[float] = Field(default=None, gt=0, le=1)
    top_k: Optional[int] = Field(default=None, ge=0)      # llama.cpp's and vLLM's extension
    seed: Optional[int] = None
    stream: Optional[bool] = False
    stream_options: Optional[StreamOptions] = None
    stop: Union[str, list[str], None] = None
    n: Optional[int] = Field(default=None, ge=1)
    presence_penalty: Optional[float] = None
    frequency_penalty: Optional[float] = None
    logit_bias: Optional[dict[str, float]] = None
    logprobs: Optional[bool] = None
    top_logprobs: Optional[int] = None
    user: Optional[str] = None
    metadata: Optional[dict[str, Any]] = None
    store: Optional[bool] = None
    service_tier: Optional[str] = None
    safety_identifier: Optional[str] = None
    prompt_cache_key: Optional[str] = None


class ChatCompletionRequest(SamplingFields):
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: Optional[int] = Field(default=None, ge=1)
    max_completion_tokens: Optional[int] = Field(default=None, ge=1)
    tools: Optional[list[Tool]] = None
    tool_choice: Union[Literal["none", "auto", "required"], NamedToolChoice, None] = None
    parallel_tool_calls: Optional[bool] = None
    response_format: Optional[ResponseFormat] = None
    reasoning_effort: Optional[Literal["minimal", "low", "medium", "high"]] = None
    reasoning: Optional[Reasoning] = None
    modalities: Optional[list[str]] = None
    audio: Optional[dict[str, Any]] = None
    prediction: Optional[dict[str, Any]] = None
    web_search_options: Optional[dict[str, Any]] = None
    verbosity: Optional[str] = None


class CompletionRequest(SamplingFields):
    prompt: Union[str, list[int], list[str], list[list[int]]]
    max_tokens: Optional[int] = Field(default=16, ge=1)
    echo: Optional[bool] = None
    suffix: Optional[str] = None
    best_of: Optional[int] = None


def _check_strings(data: Any) -> None:
    """A 400 for a string (or key) holding a lone surrogate: JSON's \\ud800 escapes decode to
    one, and the harmony renderer refuses it later with a ValueError (a 500)."""
    stack = [(data, "")]
    while stack:
        v, path = stack.pop()
        items = v.items() if isinstance(v, dict) else enumerate(v) if isinstance(v, list) else ()
        for k, x in items:
            k_shown = str(k).encode("utf-8", "backslashreplace").decode()   # the answer must encode too
            where = f"{path}.{k_shown}" if path else k_shown
            for text in ((k, x) if isinstance(k, str) else (x,)):
                if isinstance(text, str):
                    try:
                        text.encode("utf-8")
                    except UnicodeEncodeError:
                        raise bad_request(f"Invalid value for '{where}': the string holds a lone surrogate "
                                          "(an unpaired \\ud800-\\udfff escape), which is not Unicode text",
                                          param=where, code="invalid_value") from None
            if isinstance(x, (dict, list)):
                stack.append((x, where))


def parse(model_cls, data: Any):
    """`data` as `model_cls`, or a 400 naming the first field that is wrong."""
    if not isinstance(data, dict):
        raise bad_request("the request body must be a JSON object")
    _check_strings(data)
    try:
        return model_cls.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        loc = ".".join(str(p) for p in err["loc"] if not str(p).startswith("function-"))
        if err["type"] == "extra_forbidden":
            raise bad_request(f"Unrecognized request argument supplied: {loc}", param=loc) from None
        if err["type"] == "missing":
            raise bad_request(f"Missing required parameter: '{loc}'.", param=loc, code="missing_required_parameter") from None
        raise bad_request(f"Invalid value for '{loc}': {err['msg']}", param=loc, code="invalid_value") from None


def reject_unsupported(req) -> None:
    """A 400 for every field set to something this server cannot do."""
    def no(param: str, what: str):
        raise bad_request(f"{what} is not supported by this server", param=param, code="unsupported_parameter")
    if req.n not in (None, 1):
        no("n", "n > 1 (several choices)")
    if req.presence_penalty not in (None, 0, 0.0):
        no("presence_penalty", "presence_penalty")
    if req.frequency_penalty not in (None, 0, 0.0):
        no("frequency_penalty", "frequency_penalty")
    if req.logit_bias:
        no("logit_bias", "logit_bias")
    if req.logprobs:
        no("logprobs", "logprobs")
    if req.top_logprobs:
        no("top_logprobs", "top_logprobs")
    if isinstance(req, ChatCompletionRequest):
        if req.modalities and set(req.modalities) - {"text"}:
            no("modalities", "output other than text")
        for param in ("audio", "prediction", "web_search_options"):
            if getattr(req, param):
                no(param, param)
    if isinstance(req, CompletionRequest):
        if req.echo:
            no("echo", "echo")
        if req.suffix:
            no("suffix", "suffix")
        if req.best_of not in (None, 1):
            no("best_of", "best_of > 1")
