"""Chat templates as code: messages in, (text, is_markup) segments out.

Markup (turn delimiters) is tokenized with special tokens parsed; message content is tokenized with
special tokens *not* parsed, so a user who types ``<end_of_turn>`` cannot forge a turn. BOS is added
by the tokenizer, not here.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class ChatMessage:
    role: str  # "system" | "developer" | "user" | "assistant" | "tool"
    content: str
    name: str | None = None


@dataclass(frozen=True)
class Segment:
    text: str
    markup: bool


@dataclass(frozen=True)
class RenderedChat:
    segments: tuple[Segment, ...]
    # Strings that end the assistant's turn (matched as text when the token is not special).
    stop: tuple[str, ...]
    # Markup that, generated as a special token, ends the answer too (a new turn begins).
    stop_markup: tuple[str, ...] = ()
    # Whether the tokenizer adds BOS before the text (False when the template wrote it itself).
    add_bos: bool = True

    @property
    def text(self) -> str:
        return "".join(s.text for s in self.segments)


ROLES = ("system", "developer", "user", "assistant", "tool")


def _gemma(messages: Sequence[ChatMessage]) -> RenderedChat:
    """Gemma's documented turn format. It has no system role: system text leads the first user
    turn."""
    segs: list[Segment] = []
    system = [m.content for m in messages if m.role in ("system", "developer")]
    pending_system = "\n\n".join(system)
    for m in messages:
        if m.role in ("system", "developer"):
            continue
        role = "model" if m.role == "assistant" else "user"
        content = m.content
        if m.role == "tool":
            label = f"Tool result ({m.name})" if m.name else "Tool result"
            content = f"{label}:\n{content}"
        if role == "user" and pending_system:
            content = f"{pending_system}\n\n{content}"
            pending_system = ""
        segs.append(Segment(f"<start_of_turn>{role}\n", True))
        segs.append(Segment(content, False))
        segs.append(Segment("<end_of_turn>\n", True))
    if pending_system:  # only system messages: present them as the user's turn
        segs += [Segment("<start_of_turn>user\n", True), Segment(pending_system, False)]
        segs.append(Segment("<end_of_turn>\n", True))
    segs.append(Segment("<start_of_turn>model\n", True))
    return RenderedChat(tuple(segs), stop=("<end_of_turn>",), stop_markup=("<start_of_turn>",))


def _chatml(messages: Sequence[ChatMessage]) -> RenderedChat:
    segs: list[Segment] = []
    for m in messages:
        role = "system" if m.role == "developer" else m.role
        segs.append(Segment(f"<|im_start|>{role}\n", True))
        segs.append(Segment(m.content, False))
        segs.append(Segment("<|im_end|>\n", True))
    segs.append(Segment("<|im_start|>assistant\n", True))
    return RenderedChat(tuple(segs), stop=("<|im_end|>",), stop_markup=("<|im_start|>",))


TEMPLATES: dict[str, Callable[[Sequence[ChatMessage]], RenderedChat]] = {
    "gemma": _gemma,
    "chatml": _chatml,
}


def render_chat(template: str, messages: Sequence[ChatMessage]) -> RenderedChat:
    try:
        return TEMPLATES[template](messages)
    except KeyError:
        raise KeyError(f"no chat template {template!r}; known: {sorted(TEMPLATES)}") from None
