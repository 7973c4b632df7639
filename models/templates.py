"""A card's chat template: a named built-in one (``models/chat_templates.py``) or the model's own
Jinja template (``chat_template = "model"``: ``tokenizer.chat_template`` in the GGUF, or the
folder's ``tokenizer_config.json``), rendered as ``transformers.apply_chat_template`` renders it.

The Jinja environment is the one transformers, vLLM and llama.cpp use: sandboxed and immutable (a
template cannot reach Python objects or mutate its arguments), ``trim_blocks``/``lstrip_blocks``,
``loopcontrols``, ``raise_exception``, ``strftime_now`` and a ``tojson`` that keeps non-ASCII
text. A template that raises (its own ``raise_exception`` or any error) becomes a
``ChatTemplateError`` naming the first message at which it fails.

The rendered text is split back into markup and message content (``Segment``) by finding each
message's content in order, so content is tokenized with special tokens inert, as with the
built-in templates. Stop strings are the model's own EOS and end-of-turn tokens (metadata).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import cached_property
from pathlib import Path
from typing import Any, Protocol

from models.chat_templates import TEMPLATES, ChatMessage, RenderedChat, Segment, render_chat
from models.metadata import NotAModelError, read_metadata

BUILTIN_TEMPLATES = tuple(sorted(TEMPLATES))
#: ``chat_template`` value of a card whose model file carries the template.
FROM_MODEL = "model"


class ChatTemplateError(ValueError):
    """The template cannot render these messages (or cannot be compiled). ``index``: the first
    message at which rendering fails, when known."""

    def __init__(self, message: str, index: int | None = None) -> None:
        super().__init__(message)
        self.index = index


class ChatTemplate(Protocol):
    #: "builtin:<name>" or "model" (GET /v1/models/{id} shows it).
    source: str

    @property
    def supports_tools(self) -> bool:
        """The template renders a request's ``tools`` itself (else the caller describes them)."""
        ...

    def render(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> RenderedChat: ...


@dataclass(frozen=True)
class BuiltinTemplate:
    name: str

    @property
    def source(self) -> str:
        return f"builtin:{self.name}"

    @property
    def supports_tools(self) -> bool:
        return False

    def render(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> RenderedChat:
        return render_chat(self.name, messages)


def _raise_exception(message: str) -> None:
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def message_dict(message: ChatMessage) -> dict[str, Any]:
    """A message as a template sees it (the OpenAI shape); ``developer`` reads as ``system``."""
    role = "system" if message.role == "developer" else message.role
    out: dict[str, Any] = {"role": role, "content": message.content}
    if message.name:
        out["name"] = message.name
        if role == "tool":
            out["tool_call_id"] = message.name
    return out


_PROBE_TOOL = "hearth_probe_tool"


class JinjaTemplate:
    """The model's own template. Compiled on first use; rendering is pure (no I/O)."""

    source = FROM_MODEL

    def __init__(
        self,
        template: str,
        *,
        bos_token: str | None = None,
        eos_token: str | None = None,
        stop_tokens: Sequence[str] = (),
        add_bos_token: bool = False,
    ) -> None:
        self.template = template
        self.bos_token = bos_token or ""
        self.eos_token = eos_token or ""
        self.stop_tokens = tuple(stop_tokens)
        self.add_bos_token = add_bos_token

    @cached_property
    def _compiled(self) -> Any:
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        try:
            return env.from_string(self.template)
        except jinja2.TemplateError as exc:
            raise ChatTemplateError(f"the model's chat template does not compile: {exc}") from None

    @cached_property
    def supports_tools(self) -> bool:
        """Whether a tool passed as ``tools`` shows up in the rendered prompt (as in Qwen2.5's
        or Llama 3's templates; ChatML without tool support ignores it)."""
        probe = {
            "type": "function",
            "function": {"name": _PROBE_TOOL, "description": "", "parameters": {}},
        }
        try:
            text = self.render_text([{"role": "user", "content": "hi"}], tools=[probe])
        except Exception:  # noqa: BLE001 - a template that refuses tools does not support them
            return False
        return _PROBE_TOOL in text

    def render_text(
        self,
        messages: Sequence[Mapping[str, Any]],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> str:
        return self._compiled.render(
            messages=list(messages),
            tools=list(tools) if tools else None,
            add_generation_prompt=add_generation_prompt,
            bos_token=self.bos_token,
            eos_token=self.eos_token,
        )

    def render(
        self,
        messages: Sequence[ChatMessage],
        *,
        tools: Sequence[Mapping[str, Any]] | None = None,
        add_generation_prompt: bool = True,
    ) -> RenderedChat:
        dicts = [message_dict(m) for m in messages]
        try:
            text = self.render_text(dicts, tools=tools, add_generation_prompt=add_generation_prompt)
        except ChatTemplateError:
            raise
        except Exception as exc:  # noqa: BLE001 - any template failure is the request's
            raise self._locate(dicts, tools, exc) from None
        add_bos = self.add_bos_token and not (self.bos_token and text.startswith(self.bos_token))
        return RenderedChat(
            _segments(text, [m.content for m in messages]),
            stop=self.stop_tokens,
            stop_markup=self.stop_tokens,
            add_bos=add_bos,
        )

    def _locate(
        self,
        dicts: list[dict[str, Any]],
        tools: Sequence[Mapping[str, Any]] | None,
        exc: Exception,
    ) -> ChatTemplateError:
        """The first message whose prefix of the conversation the template refuses."""
        for i in range(len(dicts)):
            try:
                self.render_text(dicts[: i + 1], tools=tools, add_generation_prompt=False)
            except Exception:  # noqa: BLE001
                role = dicts[i]["role"]
                return ChatTemplateError(
                    f"messages[{i}] ({role}): the model's chat template refused the "
                    f"conversation here: {exc}",
                    index=i,
                )
        return ChatTemplateError(f"the model's chat template refused the messages: {exc}")


def _segments(text: str, contents: Sequence[str]) -> tuple[Segment, ...]:
    """Split ``text`` into markup and the messages' content, found in order. Content the template
    rewrote (so it is not found verbatim, nor stripped) stays inside the markup."""
    segs: list[Segment] = []
    cursor = 0
    for content in contents:
        for needle in (content, content.strip()):
            at = text.find(needle, cursor) if needle else -1
            if at >= 0:
                if at > cursor:
                    segs.append(Segment(text[cursor:at], True))
                segs.append(Segment(needle, False))
                cursor = at + len(needle)
                break
    if cursor < len(text):
        segs.append(Segment(text[cursor:], True))
    return tuple(segs)


def load_template(card_template: str | None, model_file: Path) -> ChatTemplate | None:
    """The template a card names: a built-in one, the model file's own (``"model"``), or None
    (a completion-only model)."""
    if not card_template:
        return None
    if card_template != FROM_MODEL:
        if card_template not in TEMPLATES:
            raise ChatTemplateError(
                f"no chat template {card_template!r}; known: {[*BUILTIN_TEMPLATES, FROM_MODEL]}"
            )
        return BuiltinTemplate(card_template)
    try:
        meta = read_metadata(model_file)
    except NotAModelError as exc:
        raise ChatTemplateError(f"cannot read the chat template: {exc}") from None
    if not meta.chat_template:
        raise ChatTemplateError(
            f"{model_file} carries no chat template; give the card a built-in one "
            f"({', '.join(BUILTIN_TEMPLATES)})"
        )
    return JinjaTemplate(
        meta.chat_template,
        bos_token=meta.bos_token,
        eos_token=meta.eos_token,
        stop_tokens=meta.stop_tokens,
        add_bos_token=meta.add_bos_token,
    )
