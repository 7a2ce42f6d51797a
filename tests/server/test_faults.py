"""Bad requests, busy servers, vanishing clients, keys: every one gets its status in OpenAI's
error shape, and the server keeps serving everyone else."""

import json
import socket
import threading
import time

import httpx
import pytest

from harness import Server, wait_for


def post(server, path, body, headers=None, raw=None):
    h = {"content-type": "application/json", **(headers or {})}
    return httpx.post(server.url + path, content=raw if raw is not None else json.dumps(body), headers=h, timeout=60)


def assert_error(r, status, param=None):
    assert r.status_code == status, r.text
    err = r.json()["error"]
    assert set(err) == {"message", "type", "param", "code"} and err["message"]
    if param is not None:
        assert err["param"] == param, err
    return err


def metrics(server) -> dict:
    text = httpx.get(server.url + "/metrics").text
    return {line.split(" ")[0]: float(line.split(" ")[1]) for line in text.splitlines() if line and line[0] != "#"}


def metric(server, name) -> float:
    return metrics(server)[name]


def chat_body(model, **kw):
    return {"model": model, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4, **kw}


def test_bad_requests_get_4xx_in_openai_shape(server, chat_model):
    m = chat_model.name
    assert_error(post(server, "/v1/chat/completions", None, raw=b'{"model": "x", "messages": [}'), 400)
    assert_error(post(server, "/v1/chat/completions", None, raw=b'\xff\xfe'), 400)
    assert_error(post(server, "/v1/chat/completions", [1, 2]), 400)
    assert_error(post(server, "/v1/chat/completions", {"model": m}), 400, "messages")
    assert_error(post(server, "/v1/chat/completions", {"model": m, "messages": "hi"}), 400, "messages")
    assert_error(post(server, "/v1/chat/completions", chat_body(m, max_tokens="many")), 400, "max_tokens")
    assert_error(post(server, "/v1/chat/completions", chat_body(m, temperature=7)), 400, "temperature")
    assert_error(post(server, "/v1/chat/completions", chat_body(m, messages=[{"role": "robot", "content": "x"}])), 400)
    assert_error(post(server, "/v1/chat/completions", chat_body(m, frobnicate=True)), 400, "frobnicate")
    err = assert_error(post(server, "/v1/chat/completions", chat_body(m, n=2)), 400, "n")
    assert "not supported" in err["message"]
    assert_error(post(server, "/v1/chat/completions", chat_body(m, logprobs=True)), 400, "logprobs")
    assert_error(post(server, "/v1/chat/completions", chat_body(m, messages=[
        {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]}])), 400)
    assert_error(post(server, "/v1/chat/completions", chat_body(m, messages=[
        {"role": "tool", "tool_call_id": "call_nowhere", "content": "42"}])), 400)
    assert_error(post(server, "/v1/chat/completions", chat_body(m, tool_choice="required")), 400, "tool_choice")
    assert_error(post(server, "/v1/chat/completions", chat_body(m, response_format={
        "type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object", "properties": {
            "a": {"type": "string", "pattern": "(?<=x)y"}}}}})), 400)
    err = assert_error(post(server, "/v1/chat/completions", chat_body("gpt-4o")), 404, "model")
    assert err["code"] == "model_not_found" and m in err["message"]
    assert_error(post(server, "/v1/completions", {"model": m, "prompt": [10 ** 9]}), 400, "prompt")
    assert_error(post(server, "/v1/responses", {"model": m, "input": "x", "previous_response_id": "resp_gone"}), 404)
    assert_error(httpx.get(server.url + "/v1/nothing-here"), 404)
    assert_error(httpx.get(server.url + "/v1/chat/completions"), 405)
    # and it still answers
    assert post(server, "/v1/chat/completions", chat_body(m)).status_code == 200


def test_prompt_longer_than_the_context_names_both_numbers(server, chat_model):
    text = "word " * 5000
    err = assert_error(post(server, "/v1/chat/completions", chat_body(chat_model.name, messages=[
        {"role": "user", "content": text}])), 400, "messages")
    assert "4096" in err["message"] and err["code"] == "context_length_exceeded"
    n = int(next(w for w in err["message"].split("prompt is ")[1].split() if w.isdigit()))
    assert n > 4096


def test_body_limit(server, chat_model):
    huge = chat_body(chat_model.name, messages=[{"role": "user", "content": "x" * (17 << 20)}])
    assert_error(post(server, "/v1/chat/completions", huge), 413)


def test_disconnect_mid_stream_frees_the_sequence(server, chat_model):
    body = chat_body(chat_model.name, max_tokens=3000, stream=True, temperature=1.0)
    with httpx.Client(timeout=60) as client:
        with client.stream("POST", server.url + "/v1/chat/completions", json=body) as r:
            assert r.status_code == 200
            lines = r.iter_lines()
            got = [next(lines) for _ in range(6)]
            assert any(line.startswith("data: ") for line in got)
        # the connection is closed here, mid-stream
    assert wait_for(lambda: httpx.get(server.url + "/health").json()["running"] == 0, timeout=30)
    generated = metric(server, "edgeoss_generated_tokens_total")
    time.sleep(0.5)
    assert metric(server, "edgeoss_generated_tokens_total") == generated  # nothing runs on for nobody
    r = post(server, "/v1/chat/completions", chat_body(chat_model.name))
    assert r.status_code == 200 and r.json()["usage"]["completion_tokens"] >= 1


def test_disconnect_while_waiting_for_a_whole_reply(server, chat_model):
    """A client that gives up on a non-streamed request stops its generation too."""
    body = json.dumps(chat_body(chat_model.name, max_tokens=3000)).encode()
    host, port = server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as s:
        s.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
        assert wait_for(lambda: httpx.get(server.url + "/health").json()["running"] == 1, timeout=30)
    assert wait_for(lambda: httpx.get(server.url + "/health").json()["running"] == 0, timeout=30)


@pytest.fixture(scope="module")
def guarded(chat_model):
    s = Server(chat_model, "--parallel", "1", "--queue", "1", "--api-key", "sekrit")
    yield s
    assert s.stop() == 0, "".join(s.log)


def test_api_key_is_required_except_for_health(guarded, chat_model):
    assert httpx.get(guarded.url + "/health").status_code == 200
    assert_error(httpx.get(guarded.url + "/v1/models"), 401)
    assert_error(httpx.get(guarded.url + "/v1/models", headers={"authorization": "Bearer wrong"}), 401)
    assert_error(httpx.get(guarded.url + "/metrics"), 401)
    ok = guarded.client(api_key="sekrit").models.list()
    assert ok.data[0].id == chat_model.name


def test_a_full_queue_answers_429_with_retry_after(guarded, chat_model):
    headers = {"authorization": "Bearer sekrit"}
    long = chat_body(chat_model.name, max_tokens=3000, stream=True)
    streams = []
    with httpx.Client(timeout=60, headers=headers) as client:
        try:
            for _ in range(2):  # one runs, one waits
                cm = client.stream("POST", guarded.url + "/v1/chat/completions", json=long)
                streams.append((cm, cm.__enter__()))
            assert wait_for(lambda: httpx.get(guarded.url + "/health").json()["waiting"] == 1, timeout=30)
            r = post(guarded, "/v1/chat/completions", chat_body(chat_model.name), headers=headers)
            assert_error(r, 429)
            assert r.headers["retry-after"] == "1"
        finally:
            for cm, _ in streams:
                cm.__exit__(None, None, None)
    assert wait_for(lambda: httpx.get(guarded.url + "/health").json()["running"] == 0, timeout=30)
    assert post(guarded, "/v1/chat/completions", chat_body(chat_model.name), headers=headers).status_code == 200


def test_metrics_count_requests_and_tokens(server, chat_model):
    post(server, "/v1/chat/completions", chat_body(chat_model.name))
    values = metrics(server)
    assert values['edgeoss_requests_total{route="/v1/chat/completions",status="200"}'] >= 1
    assert values["edgeoss_generated_tokens_total"] >= 1 and values["edgeoss_prompt_tokens_total"] > 0
    assert values["edgeoss_requests_running"] == 0 and values["edgeoss_requests_waiting"] == 0
    assert 0 <= values["edgeoss_prefix_cache_hit_rate"] <= 1 and values["edgeoss_expert_cache_hit_rate"] == 1
    assert values["edgeoss_resident_memory_bytes"] > 50e6


def test_cors_only_when_asked(server, chat_model):
    pre = {"origin": "http://app.example", "access-control-request-method": "POST"}
    r = httpx.options(server.url + "/v1/chat/completions", headers=pre)
    assert "access-control-allow-origin" not in r.headers
    s = Server(chat_model, "--cors-origin", "http://app.example")
    try:
        r = httpx.options(s.url + "/v1/chat/completions", headers=pre)
        assert r.status_code == 200 and r.headers["access-control-allow-origin"] == "http://app.example"
    finally:
        assert s.stop() == 0


def test_concurrent_clients_get_their_own_answers(server, chat_model):
    """Requests batched together give what each would alone (greedy)."""
    c = server.client()
    prompts = [f"Tell me about {w}" for w in ("cats", "the sea", "Rome", "tea")]
    alone = [c.chat.completions.create(model=chat_model.name, messages=[{"role": "user", "content": p}],
                                       max_tokens=12, temperature=0).choices[0].message for p in prompts]
    together, errors = [None] * 4, []

    def run(i):
        try:
            together[i] = c.chat.completions.create(model=chat_model.name, max_tokens=12, temperature=0,
                                                    messages=[{"role": "user", "content": prompts[i]}]).choices[0].message
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)
    threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert [(m.content, getattr(m, "reasoning_content", None)) for m in together] == \
           [(m.content, getattr(m, "reasoning_content", None)) for m in alone]
