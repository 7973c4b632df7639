"""The workload of a run: which prompts, through which API, with which output length.

Synthetic prompts are random English words drawn with a fixed seed and trimmed to a target
length in tokens of the model being measured (counted with the GGUF's own tokenizer when one is
given, else estimated), so two servers running the same GGUF see the same prompt tokens. Prompts
can also come from a file: ``.jsonl`` (one object a line with ``prompt`` or ``messages``, and
optionally ``max_tokens``) or plain text (one prompt a line).
"""

from __future__ import annotations

import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

log = logging.getLogger(__name__)

Api = Literal["completions", "chat"]
TokenCounter = Callable[[str], int]

# Common English words: each is one or two tokens in most vocabularies, so lengths trim finely.
_WORDS = (
    "the of and to in is was for on that with as by at from his her they this be are have had "
    "not but what all were when we there can an your which their said if do will each about how "
    "up out them then she many some so these would other into has more two like him time see no "
    "could make than first been its who now people my made over did down only way find use may "
    "water long little very after words called just where most know get through back much before "
    "go good new write our used me man too any day same right look think also around another came "
    "come work three word must because does part even place well such here take why things help "
    "put years different away again off went old number great tell men say small every found "
    "still between name should home big give air line set own under read last never us left end "
    "along while might next sound below saw something thought both few those always looked show "
    "large often together asked house world going want school important until form food keep "
    "children feet land side without boy once animals life enough took sometimes four head above "
    "kind began almost live page got earth need far hand high year mother light parts country "
    "father let night following picture being study second eyes soon times story boys since white "
    "days ever paper hard near sentence better best across during today others however sure means "
    "knew tried river city mountain ocean forest garden window table letter music market village"
).split()


@dataclass(frozen=True)
class Prompt:
    """One request's input. Exactly one of ``text`` and ``messages`` is set."""

    text: str | None = None
    messages: tuple[dict[str, str], ...] | None = None
    max_tokens: int | None = None  # overrides the workload's output length
    input_tokens: int | None = None  # as counted when the prompt was built (None: unknown)


@dataclass(frozen=True)
class Workload:
    """What every request of a run looks like; prompts are used round-robin."""

    prompts: tuple[Prompt, ...]
    api: Api = "completions"
    output_tokens: int = 128
    # Ask the server to ignore EOS (and set min_tokens) so every request makes output_tokens.
    fixed_output: bool = True
    temperature: float = 0.0
    response_format: dict[str, Any] | None = None
    extra_body: dict[str, Any] = field(default_factory=dict)

    def prompt(self, i: int) -> Prompt:
        return self.prompts[i % len(self.prompts)]

    def max_tokens(self, i: int) -> int:
        return self.prompt(i).max_tokens or self.output_tokens

    def settings(self) -> dict[str, Any]:
        """The workload as stored with a result (no prompt texts)."""
        lens = [p.input_tokens for p in self.prompts if p.input_tokens is not None]
        return {
            "api": self.api,
            "n_prompts": len(self.prompts),
            "input_tokens_mean": round(sum(lens) / len(lens), 1) if lens else None,
            "output_tokens": self.output_tokens,
            "fixed_output": self.fixed_output,
            "temperature": self.temperature,
            "response_format": self.response_format is not None,
        }


def gguf_token_counter(path: str | Path) -> TokenCounter:
    """Counts tokens with a GGUF's own vocabulary (loads the vocabulary only; no weights)."""
    from llama_cpp import Llama

    llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    return lambda text: len(llm.tokenize(text.encode("utf-8"), add_bos=True, special=False))


def estimate_tokens(text: str) -> int:
    """A rough count when no tokenizer is at hand: BOS + 1.3 tokens a word."""
    return 1 + round(len(text.split()) * 1.3)


def synthetic_prompts(
    n: int, input_tokens: int, *, seed: int = 0, count: TokenCounter = estimate_tokens
) -> tuple[Prompt, ...]:
    """``n`` distinct prompts of ``input_tokens`` tokens each (BOS included), reproducible."""
    if n < 1 or input_tokens < 2:
        raise ValueError("need n >= 1 and input_tokens >= 2")
    rng = random.Random(seed)
    return tuple(_one_prompt(rng, input_tokens, count) for _ in range(n))


def _one_prompt(rng: random.Random, target: int, count: TokenCounter) -> Prompt:
    words = [rng.choice(_WORDS) for _ in range(target)]
    # Shrink then grow one word at a time: a word is one or two tokens, so this lands within one.
    while len(words) > 1 and count(" ".join(words)) > target:
        words.pop()
    while count(" ".join(words)) < target:
        words.append(rng.choice(_WORDS))
    text = " ".join(words)
    return Prompt(text=text, input_tokens=count(text))


def prompts_from_file(path: str | Path, *, count: TokenCounter | None = None) -> tuple[Prompt, ...]:
    """Prompts from ``.jsonl`` (``prompt`` or ``messages``, optional ``max_tokens``) or text."""
    path = Path(path)
    lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
    if path.suffix != ".jsonl":
        return tuple(Prompt(text=ln, input_tokens=count(ln) if count else None) for ln in lines)
    prompts = []
    for i, line in enumerate(lines, 1):
        row = json.loads(line)
        if "messages" in row:
            prompts.append(
                Prompt(messages=tuple(row["messages"]), max_tokens=row.get("max_tokens"))
            )
        elif "prompt" in row:
            text = row["prompt"]
            n = count(text) if count else None
            prompts.append(Prompt(text=text, max_tokens=row.get("max_tokens"), input_tokens=n))
        else:
            raise ValueError(f"{path}:{i}: a line needs 'prompt' or 'messages'")
    if not prompts:
        raise ValueError(f"{path}: no prompts")
    return tuple(prompts)


def request_body(workload: Workload, i: int, model: str, *, stream: bool = True) -> dict[str, Any]:
    """The JSON body of request ``i`` (chat or completions), OpenAI's fields plus the extras."""
    p = workload.prompt(i)
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": workload.max_tokens(i),
        "temperature": workload.temperature,
        "stream": stream,
    }
    if stream:
        body["stream_options"] = {"include_usage": True}
    if workload.api == "chat":
        body["messages"] = list(p.messages or ({"role": "user", "content": p.text or ""},))
    else:
        if p.text is None:
            raise ValueError("the completions API needs text prompts, not messages")
        body["prompt"] = p.text
    if workload.fixed_output:
        body["ignore_eos"] = True
        body["min_tokens"] = workload.max_tokens(i)
    if workload.response_format is not None:
        body["response_format"] = workload.response_format
    body.update(workload.extra_body)
    return body
