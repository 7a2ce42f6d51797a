"""Conversations in gpt-oss's harmony format: rendering prompts, parsing the streamed reply,
tool calls (openai-harmony).
Works on a loaded model passed in; imports format at most, never server or cli."""
