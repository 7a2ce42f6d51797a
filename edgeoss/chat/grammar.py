"""Constrained decoding of harmony replies with llguidance.

A reply is constrained as a whole harmony envelope, not just its JSON: an optional analysis
message (bounded, so that even random weights reach the constrained part), then either a final
message or a tool call `<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>
{args}<|call|>`, as the request allows. llguidance's lark grammars name harmony's special
tokens as literals; its JSON-schema compiler does the arguments and the structured output.

A Constraint is what the engine's scheduler needs: `mask(logits)` before sampling a token and
`accept(token)` after.
"""

from __future__ import annotations

import base64
import json
import threading
from dataclasses import dataclass

import numpy as np

from ..errors import EdgeossError

N_VOCAB = 201088        # o200k plus harmony's special tokens (199998 ... 201087)
RETURN_TOKEN = 200002   # <|return|>: the end of a final answer

# o200k's pre-tokenizer (tiktoken's o200k_base pattern): llguidance tokenizes the text a grammar
# forces the same way the model's tokenizer does
_O200K_PATTERN = "|".join([
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?""",
    r"""\p{N}{1,3}""",
    r""" ?[^\s\p{L}\p{N}]+[\r\n/]*""",
    r"""\s*[\r\n]+""",
    r"""\s+(?!\S)""",
    r"""\s+""",
])


class GrammarError(EdgeossError, ValueError):
    """A schema or tool definition that cannot be turned into a constraint."""


_TOKENIZERS: dict[str, object] = {}
_TOKENIZERS_LOCK = threading.Lock()


def lltokenizer(encoding, vocab_file: str):
    """llguidance's view of the model's vocabulary (built once per vocabulary file, ~1.5 s)."""
    import llguidance
    with _TOKENIZERS_LOCK:
        if vocab_file not in _TOKENIZERS:
            ranks = {}
            with open(vocab_file, "rb") as f:
                for line in f:
                    if line.strip():
                        token, rank = line.split()
                        ranks[base64.b64decode(token)] = int(rank)
            first_special = len(ranks)
            special = {encoding.decode_utf8([i]): i for i in range(first_special, N_VOCAB)}
            _TOKENIZERS[vocab_file] = llguidance.LLTokenizer.from_tiktoken(
                encoder=ranks, special_tokens=special, pattern=_O200K_PATTERN, eos_token=RETURN_TOKEN,
                n_vocab=N_VOCAB)
        return _TOKENIZERS[vocab_file]


@dataclass
class ToolSpec:
    name: str
    parameters: dict | None   # JSON schema of the arguments (None: any JSON object)


def _schema(schema: dict | None) -> str:
    """A JSON schema as llguidance's %json takes it, with fixed whitespace: flexible whitespace
    lets sampling wander in blanks for ever."""
    schema = dict(schema) if schema else {"type": "object"}
    schema.setdefault("x-guidance", {"whitespace_flexible": False})
    return json.dumps(schema)


def _lit(text: str) -> str:
    return json.dumps(text)  # a lark string literal: plain text, tokenized as text


# harmony's special tokens by id: a quoted "<|call|>" in lark would be the text, not the token
START, END, MESSAGE, CHANNEL, CONSTRAIN, CALL, RETURN = (f"<[{i}]>" for i in (200006, 200007, 200008, 200005, 200003,
                                                                              200012, 200002))


def reply_grammar(*, final: str = "text", final_schema: dict | None = None, tools: list[ToolSpec] = (),
                  calls: str = "auto", analysis_tokens: int = 1024) -> str:
    """The lark grammar of one assistant reply after `<|start|>assistant`.

    final: "text" (free text), "json" (any JSON object, final_schema None) or "schema";
    calls: "none" (no tool call), "auto" (a final answer or a call) or "required" (a call to one
    of `tools`); analysis_tokens bounds the reasoning before it."""
    rules = [
        f'analysis: {CHANNEL} "analysis" {MESSAGE} thought {END} {START} "assistant"',
        f"thought[max_tokens={max(1, int(analysis_tokens))}]: /(.|\\n)*/",
    ]
    choices = []
    if calls != "required":
        if final == "text":
            rules.append(f'final: {CHANNEL} "final" {MESSAGE} /(.|\\n)*/ {RETURN}')
        else:
            rules.append(f'final: {CHANNEL} "final" {MESSAGE} answer {RETURN}')
            rules.append(f"answer: %json {_schema(final_schema if final == 'schema' else {'type': 'object'})}")
        choices.append("final")
    if calls != "none":
        for i, tool in enumerate(tools):
            rules.append(f'call{i}: {CHANNEL} "commentary" {_lit(" to=functions." + tool.name)} " " '
                         f'{CONSTRAIN} "json" {MESSAGE} args{i} {CALL}')
            rules.append(f"args{i}: %json {_schema(tool.parameters)}")
            choices.append(f"call{i}")
    if not choices:
        raise GrammarError("tool_choice requires a tool call, but no tool was given")
    return "\n".join([f"start: analysis? ({' | '.join(choices)})"] + rules) + "\n"


class Constraint:
    """An llguidance matcher over one reply: the scheduler masks each token's logits with it."""

    def __init__(self, tokenizer, grammar: str):
        import llguidance
        import llguidance.numpy as lln
        self._lln = lln
        self.matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        err = self.matcher.get_error()
        if err:
            raise GrammarError(f"the schema cannot be enforced: {err}")
        self._bits = lln.allocate_token_bitmask(1, tokenizer.vocab_size)

    def mask(self, logits: np.ndarray) -> None:
        """Set the logits of tokens the grammar forbids next to -inf (in place)."""
        self._lln.fill_next_token_bitmask(self.matcher, self._bits, 0)
        allowed = np.unpackbits(self._bits[0].view(np.uint8), bitorder="little")[: logits.shape[0]]
        logits[allowed == 0] = -np.inf

    def accept(self, token: int) -> None:
        if not self.matcher.consume_token(int(token)):
            raise GrammarError(f"token {token} broke the constraint: {self.matcher.get_error()}")
