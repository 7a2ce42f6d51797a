"""Conversations in gpt-oss's harmony format: rendering prompts, parsing the streamed reply into
reasoning, content and tool calls (openai-harmony), and grammars that constrain a reply (llguidance).
Works on a loaded model passed in; imports format at most, never server or cli."""
