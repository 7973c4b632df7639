"""One model's generation (``ModelRunner``) and the set of live models (``ModelPool``).

A ``ModelRunner`` owns everything that is per model: the backend (its weights, KV cache and step
loop, i.e. the batching), the card's chat template, the grammar compiler over its vocabulary and
the admission count. ``generate`` turns a request into backend sequences (one per choice), streams
their tokens back as text deltas with stop strings applied, and always aborts what it started when
the caller stops listening (a client disconnect cancels the iterator; its ``finally`` aborts in
the backend). The backend runs on its own thread; its outputs reach the event loop through one
``call_soon_threadsafe`` per step.

The ``ModelPool`` maps a request's ``model`` to its runner: the configured model is loaded at
start; any other generation card is loaded on first use, unloaded after an idle keep-alive, and
kept within a memory budget by unloading the least recently used idle model.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import TYPE_CHECKING, Any

from engine.backends.base import Backend, create_backend
from engine.errors import (
    BackendError,
    ContextLengthError,
    InvalidRequestError,
    NotFoundError,
    NotReadyError,
    OverloadedError,
    RequestTimeoutError,
)
from engine.fairness import FairQueue
from engine.grammar.binding import BoundFormat, GrammarSupport
from engine.text import IncrementalText, detokenize
from engine.types import (
    BackendOutput,
    BackendRequest,
    BackendStats,
    ChoiceDelta,
    FinishReason,
    GenerateRequest,
    GenerationDone,
    GenerationEvent,
    LogprobEntry,
    PromptLogprobs,
    SamplingParams,
    SequenceFinished,
    TokenConstraint,
    TokenOutput,
    TopLogprob,
    Usage,
)
from models import get_card, list_cards, model_path, verify_model
from models.chat_templates import ChatMessage
from models.templates import ChatTemplate, ChatTemplateError, load_template

if TYPE_CHECKING:
    from configs import Settings
    from models import ModelCard

log = logging.getLogger(__name__)


# Put in a request's queue at its deadline (never a backend output).
_EXPIRED: Any = object()
# Put in every request's queue when the backend's step loop died.
_DEAD: Any = object()
SUPERVISE_S = 0.5  # how often the step loop is checked


@dataclasses.dataclass
class _Choice:
    index: int
    seq_id: str
    text: IncrementalText
    tokens: list[int] = dataclasses.field(default_factory=list)
    finished: bool = False


class ModelRunner:
    """One loaded model: backend + batching + chat template + grammar. ``start``, use, ``close``.

    Admission: at most ``llm.max_running + llm.max_waiting`` sequences in flight; beyond that a
    request is refused with 503 + Retry-After (``OverloadedError``) before anything is submitted.
    At most ``llm.max_running`` are submitted to the backend; the others wait in per-tenant
    queues served round-robin (``engine.fairness.FairQueue``), within their deadline.
    """

    def __init__(self, settings: Settings, card: ModelCard, backend: Backend | None = None):
        self.settings = settings
        self.card = card
        self._backend = backend
        self._queues: dict[str, asyncio.Queue[BackendOutput]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._inflight = 0
        # Room in the batch, granted per tenant in turn (requests past it wait here, not in
        # the backend's FIFO).
        self._fair = FairQueue(settings.llm.max_running)
        self._turn_stop_ids: tuple[int, ...] | None = None
        self._template: ChatTemplate | None = None
        self._started = False
        # Structured output: compiles response formats, one constraint per choice.
        self.grammar = GrammarSupport()
        self.last_used = time.monotonic()
        self._owns_backend = backend is None  # a crashed one is replaced by a fresh one
        self._watch: asyncio.Task[None] | None = None
        self.restarts = 0  # step loops that died and were restarted

    # ---- lifecycle --------------------------------------------------------------------------

    async def start(self) -> None:
        """Verify the model file, load the backend and start its step loop."""
        self._loop = asyncio.get_running_loop()
        if self.settings.llm.max_model_len > self.card.context_length:
            raise ValueError(
                f"setting llm.max_model_len: {self.settings.llm.max_model_len} exceeds the "
                f"context length of {self.card.id} ({self.card.context_length})"
            )
        if self._backend is None:
            await asyncio.to_thread(verify_model, self.card, self.settings.models_dir)
            self._backend = create_backend(self.settings, self.card)
        await asyncio.to_thread(self._backend.start, self._on_outputs)
        self._started = True
        self._watch = asyncio.create_task(self._supervise(), name=f"supervise-{self.card.id}")
        log.info("model ready: %s on %s", self.card.id, self._backend.name)

    async def close(self) -> None:
        self._started = False
        if self._watch is not None:
            self._watch.cancel()
        self.grammar.close()
        if self._backend is not None:
            await asyncio.to_thread(self._backend.close)

    async def _supervise(self) -> None:
        """Watch the backend's step loop. If it dies, the requests in flight fail with 503 (they
        would wait forever) and a fresh backend is started (``ready`` is False meanwhile)."""
        while self._started:
            await asyncio.sleep(SUPERVISE_S)
            backend = self._backend
            if not self._started or backend is None or backend.is_stepping():
                continue
            self.restarts += 1
            queues = {id(q): q for q in self._queues.values()}  # one per request
            log.error(
                "the %s step loop of %s stopped: failing %d request(s), restarting it",
                backend.name,
                self.card.id,
                len(queues),
            )
            for queue in queues.values():
                queue.put_nowait(_DEAD)
            try:
                await asyncio.to_thread(backend.close)
                if self._owns_backend:
                    self._backend = create_backend(self.settings, self.card)
                await asyncio.to_thread(self._backend.start, self._on_outputs)  # type: ignore[union-attr]
                log.info("model %s restarted on %s", self.card.id, self._backend.name)  # type: ignore[union-attr]
            except Exception:  # noqa: BLE001 - tried again at the next check
                log.exception("restarting %s failed", self.card.id)

    @property
    def ready(self) -> bool:
        return self._started and self._backend is not None and self._backend.is_stepping()

    @property
    def backend(self) -> Backend:
        if self._backend is None:
            raise NotReadyError("the model is still loading", retry_after=2)
        return self._backend

    @property
    def backend_name(self) -> str | None:
        return self._backend.name if self._backend is not None else None

    @property
    def inflight(self) -> int:
        """Sequences admitted and not yet finished."""
        return self._inflight

    @property
    def n_vocab(self) -> int:
        return self.backend.n_vocab

    @property
    def max_model_len(self) -> int:
        return self.backend.max_model_len

    def stats(self) -> BackendStats | None:
        """The backend's scheduler figures (running, waiting, KV use), or None before start."""
        return self._backend.stats() if self._backend is not None else None

    # ---- tokens -----------------------------------------------------------------------------

    def tokenize_prompt(self, prompt: str, *, add_special_tokens: bool = True) -> list[int]:
        """A completions prompt: special tokens in the text are parsed (the caller wrote them)."""
        ids = self.backend.tokenize(prompt, add_bos=add_special_tokens, parse_special=True)
        bos = self.backend.bos_token_id
        if len(ids) >= 2 and ids[0] == bos and ids[1] == bos:
            ids = ids[1:]  # the text began with BOS itself
        return ids

    def count_tokens(self, text: str) -> int:
        """Tokens ``text`` takes as plain content (special tokens inert, no BOS)."""
        return len(self.backend.tokenize(text, add_bos=False, parse_special=False))

    @property
    def chat_template(self) -> ChatTemplate:
        """The card's template (built-in or the model file's own), loaded on first use; 400 when
        the model has none or it cannot be loaded."""
        if self._template is None:
            try:
                path = model_path(self.card, self.settings.models_dir)
                template = load_template(self.card.chat_template, path)
            except (ChatTemplateError, OSError) as exc:
                raise InvalidRequestError(f"model {self.card.id!r}: {exc}", param="model") from None
            if template is None:
                raise InvalidRequestError(
                    f"model {self.card.id!r} has no chat template; use /v1/completions",
                    param="model",
                )
            self._template = template
        return self._template

    def tokenize_chat(
        self, messages: Sequence[ChatMessage], tools: Sequence[dict[str, Any]] | None = None
    ) -> tuple[list[int], tuple[str, ...]]:
        """Render the card's chat template (with ``tools`` when the template renders them);
        content is tokenized with special tokens inert. Stop strings and turn-ending tokens come
        from the template (a built-in one's markup, or the model's own EOS/end-of-turn tokens)."""
        try:
            rendered = self.chat_template.render(messages, tools=tools)
        except ChatTemplateError as exc:
            param = "messages" if exc.index is None else f"messages[{exc.index}]"
            raise InvalidRequestError(str(exc), param=param) from None
        bos = self.backend.bos_token_id
        ids = [bos] if bos is not None and rendered.add_bos else []
        for seg in rendered.segments:
            ids += self.backend.tokenize(seg.text, add_bos=False, parse_special=seg.markup)
        if self._turn_stop_ids is None:  # the template's markup is fixed: resolve it once
            self._turn_stop_ids = self._special_ids(rendered.stop_markup)
        return ids, rendered.stop

    def _special_ids(self, markup: Sequence[str]) -> tuple[int, ...]:
        """Token ids of markup strings that are single special tokens in this vocabulary."""
        found = []
        for text in markup:
            ids = self.backend.tokenize(text, add_bos=False, parse_special=True)
            if len(ids) == 1:
                found.append(ids[0])
        return tuple(found)

    def detokenize(self, ids: Sequence[int]) -> str:
        self._check_token_ids(ids, "tokens")
        return "".join(self.backend.token_text(t) for t in ids)

    def token_text(self, token_id: int) -> str:
        return self.backend.token_text(token_id)

    def _check_token_ids(self, ids: Sequence[int], param: str) -> None:
        n_vocab = self.backend.n_vocab
        for t in ids:
            if not 0 <= t < n_vocab:
                raise InvalidRequestError(
                    f"token id {t} is out of range: the vocabulary has {n_vocab} tokens",
                    param=param,
                )

    # ---- generation -------------------------------------------------------------------------

    async def generate(self, req: GenerateRequest) -> AsyncIterator[GenerationEvent]:
        """Stream a generation: ChoiceDelta events (any choice order), then one GenerationDone."""
        backend = self._require_ready()
        self.last_used = time.monotonic()
        timeout_s = req.timeout_s or self.settings.llm.request_timeout_s
        deadline = asyncio.get_running_loop().time() + timeout_s
        n = req.n
        self._admit(n)  # 503 before any work (grammar, tokenization) when the engine is full
        queue: asyncio.Queue[BackendOutput] = asyncio.Queue()
        choices: list[_Choice] = []
        # The deadline puts a marker in the queue: _collect raises 408 when it reaches it.
        expiry = asyncio.get_running_loop().call_at(deadline, queue.put_nowait, _EXPIRED)
        room = 0
        try:
            req, fmt, prompt, params = await self._prepare(req, backend)
            started = time.perf_counter()
            room = await self._turn(req, deadline)  # per-tenant round-robin for batch room
            self._start_choices(req, prompt, params, queue, backend, choices, fmt)
            async for event in self._collect(req, prompt, params, choices, queue, started):
                yield event if fmt is None else fmt.observe(event)
        finally:
            expiry.cancel()
            for c in choices:
                self._queues.pop(c.seq_id, None)
                if not c.finished:
                    backend.abort(c.seq_id)
            if room:
                self._fair.release(room)
            self._inflight -= n  # admitted as a whole, released as a whole

    async def _prepare(
        self, req: GenerateRequest, backend: Backend
    ) -> tuple[GenerateRequest, BoundFormat | None, list[int], SamplingParams]:
        """Compile the response format, tokenize the prompt, check the context and stops."""
        spec = req.response_format
        own_tools = (
            spec is not None
            and spec.kind == "tools"
            and req.messages is not None
            and self.chat_template.supports_tools
        )
        # Compiles response_format (400/422); tools go through the model's template if it can.
        req, fmt = await self.grammar.bind(req, backend, template_tools=own_tools)
        prompt, stops = self._prompt_of(req)
        params = req.params
        if req.messages is not None and self._turn_stop_ids and not params.ignore_eos:
            # A chat answer ends where the model would begin another turn.
            params = dataclasses.replace(
                params, stop_token_ids=tuple(params.stop_token_ids) + self._turn_stop_ids
            )
        self._check_context(len(prompt), params.max_tokens, req)
        if fmt is not None:
            fmt.budget = min(params.max_tokens, backend.max_model_len - len(prompt))
        if params.stop or stops:
            params = dataclasses.replace(params, stop=tuple(params.stop) + tuple(stops))
        return req, fmt, prompt, params

    def _require_ready(self) -> Backend:
        if not self.ready:
            raise NotReadyError("Hearth is starting: the model is not loaded yet", retry_after=2)
        return self.backend

    def _prompt_of(self, req: GenerateRequest) -> tuple[list[int], tuple[str, ...]]:
        if req.messages is not None:
            return self.tokenize_chat(req.messages, req.template_tools)
        if req.prompt_tokens is not None:
            ids = list(req.prompt_tokens)
            if not ids:  # nothing to prefill: the backend would never schedule it
                raise InvalidRequestError("the prompt is an empty list of tokens", param="prompt")
            self._check_token_ids(ids, "prompt")
            return ids, ()
        ids = self.tokenize_prompt(req.prompt or "", add_special_tokens=req.add_special_tokens)
        if not ids:
            raise InvalidRequestError("the prompt is empty", param="prompt")
        return ids, ()

    def _check_context(self, n_prompt: int, max_tokens: int, req: GenerateRequest) -> None:
        limit = self.backend.max_model_len
        if n_prompt + max_tokens > limit:
            param = "messages" if req.messages is not None else "prompt"
            raise ContextLengthError(
                f"This model's maximum context length is {limit} tokens. However, you requested "
                f"{n_prompt + max_tokens} tokens ({n_prompt} in the prompt, {max_tokens} for the "
                "completion). Please reduce the prompt or max_tokens.",
                param=param,
            )

    async def _turn(self, req: GenerateRequest, deadline: float) -> int:
        """Wait for the request's turn in the batch (``FairQueue``), within its deadline."""
        left = deadline - asyncio.get_running_loop().time()
        try:
            return await asyncio.wait_for(self._fair.acquire(req.tenant, req.n), max(left, 0))
        except TimeoutError:
            raise RequestTimeoutError(
                "the request waited for its turn past its timeout "
                f"of {req.timeout_s or self.settings.llm.request_timeout_s:g} s",
                param="timeout",
                code="request_timeout",
            ) from None

    def _admit(self, n: int) -> None:
        cfg = self.settings.llm
        if self._inflight + n > cfg.max_running + cfg.max_waiting:
            raise OverloadedError(
                f"Hearth is at capacity ({cfg.max_running} running, {cfg.max_waiting} waiting); "
                "retry shortly",
                retry_after=self.settings.server.retry_after_s,
                code="overloaded",
            )
        self._inflight += n

    def _start_choices(
        self,
        req: GenerateRequest,
        prompt: list[int],
        params: SamplingParams,
        queue: asyncio.Queue[BackendOutput],
        backend: Backend,
        choices: list[_Choice],
        fmt: BoundFormat | None,
    ) -> None:
        """Submit one sequence per choice, appending each to ``choices`` as it is submitted (so
        the caller's ``finally`` aborts exactly what was started, even if a later one fails)."""
        eos = frozenset() if params.ignore_eos else backend.eos_token_ids
        for i in range(req.n):
            seq_id = f"{req.request_id}/{i}"
            p = params
            if params.seed is not None and i:
                p = dataclasses.replace(params, seed=params.seed + i)
            constraint: TokenConstraint | None = fmt.new_constraint() if fmt else None
            self._queues[seq_id] = queue
            choices.append(_Choice(i, seq_id, IncrementalText(params.stop)))
            backend.submit(
                BackendRequest(seq_id, list(prompt), p, eos, constraint, cache_salt=req.tenant)
            )

    async def _collect(
        self,
        req: GenerateRequest,
        prompt: list[int],
        params: SamplingParams,
        choices: list[_Choice],
        queue: asyncio.Queue[BackendOutput],
        started: float,
    ) -> AsyncIterator[GenerationEvent]:
        by_id = {c.seq_id: c for c in choices}
        prompt_lp: tuple[LogprobEntry, ...] | None = None
        ttft = None
        open_choices = len(choices)
        while open_choices:
            out = await queue.get()
            if out is _DEAD:
                raise OverloadedError(
                    "the model's step loop stopped and is being restarted; retry shortly",
                    retry_after=self.settings.server.retry_after_s,
                    code="engine_restarting",
                )
            if out is _EXPIRED:
                timeout_s = req.timeout_s or self.settings.llm.request_timeout_s
                raise RequestTimeoutError(
                    f"the request did not finish within its timeout of {timeout_s:g} s",
                    param="timeout",
                    code="request_timeout",
                )
            choice = by_id.get(out.request_id)
            if choice is None or choice.finished:
                continue
            if isinstance(out, PromptLogprobs):
                prompt_lp = self._prompt_entries(prompt, out)
                continue
            if isinstance(out, SequenceFinished):
                if out.error:
                    raise BackendError(f"generation failed: {out.error}")
                choice.finished = True
                open_choices -= 1
                yield ChoiceDelta(choice.index, choice.text.flush(), (), None, FinishReason.STOP)
                continue
            ttft = ttft if ttft is not None else time.perf_counter() - started
            delta = self._on_token(choice, out, params)
            if delta.finish_reason is not None:
                open_choices -= 1
            yield delta
        usage = Usage(len(prompt), sum(len(c.tokens) for c in choices))
        prompt_text = detokenize(self.backend.token_bytes, prompt) if req.prompt else ""
        yield GenerationDone(
            usage, prompt_lp, prompt_text, ttft, duration_s=time.perf_counter() - started
        )

    def _on_token(self, choice: _Choice, out: TokenOutput, params: SamplingParams) -> ChoiceDelta:
        choice.tokens.append(out.token_id)
        text = choice.text.feed(self.backend.token_bytes(out.token_id))
        reason = out.finish_reason
        if choice.text.stopped:
            reason = FinishReason.STOP
            if out.finish_reason is None:
                self.backend.abort(choice.seq_id)
        if reason is not None:
            choice.finished = True
            text += choice.text.flush()
        lp = None
        if params.logprobs is not None:
            lp = (self._entry(out.token_id, out.logprob, out.top_logprobs),)
        return ChoiceDelta(choice.index, text, (out.token_id,), lp, reason)

    def _entry(
        self, token_id: int, logprob: float | None, top: Sequence[TopLogprob]
    ) -> LogprobEntry:
        text = self.backend.token_text(token_id)
        tops = tuple(
            (
                self.backend.token_text(t.token_id),
                t.token_id,
                self.backend.token_text(t.token_id).encode(),
                t.logprob,
            )
            for t in top
        )
        return LogprobEntry(text, token_id, text.encode(), logprob, tops)

    def _prompt_entries(self, prompt: list[int], out: PromptLogprobs) -> tuple[LogprobEntry, ...]:
        return tuple(
            self._entry(t, lp, top)
            for t, lp, top in zip(prompt, out.logprobs, out.top_logprobs, strict=False)
        )

    # ---- backend → event loop ---------------------------------------------------------------

    def _on_outputs(self, outputs: Sequence[BackendOutput]) -> None:
        """Called on the backend thread once per step."""
        loop = self._loop
        if loop is not None and not loop.is_closed():
            loop.call_soon_threadsafe(self._dispatch, outputs)

    def _dispatch(self, outputs: Sequence[BackendOutput]) -> None:
        for out in outputs:
            queue = self._queues.get(out.request_id)
            if queue is not None:
                queue.put_nowait(out)


def _generates(card: ModelCard) -> bool:
    return card.supports("chat") or card.supports("completion")


# A rough KV-cache size per cell (K and V, f16, a small model's layers x KV width); the budget
# only needs an estimate before loading.
KV_BYTES_PER_CELL = 16 * 1024
REAP_S = 1.0


class ModelPool:
    """The live generation models by card id. ``lease(model)`` is the one way generation reaches
    a runner.

    The configured model (``settings.llm.model``) is loaded at ``start`` and stays loaded. Any
    other generation card is loaded on first use (concurrent first requests load it once) and
    unloaded once idle for its keep-alive (``[models] keep_alive_s``, or the request's
    ``keep_alive``). Loading past ``[models] max_resident_bytes`` first unloads the least recently
    used idle model; with none idle, the request waits up to ``load_wait_s`` and then gets 503 with
    Retry-After. A runner is never unloaded while a lease on it is held.
    """

    def __init__(
        self,
        settings: Settings,
        default: ModelRunner,
        backend_factory: Callable[[ModelCard], Backend] | None = None,
    ) -> None:
        self.settings = settings
        self._default = default
        self._runners: dict[str, ModelRunner] = {default.card.id: default}
        self._leases: dict[str, int] = {}
        self._expires: dict[str, float] = {}
        self._loading: dict[str, asyncio.Task[ModelRunner]] = {}
        self._changed = asyncio.Event()
        self._backend_factory = backend_factory
        self._reaper: asyncio.Task[None] | None = None
        self.loads = 0
        self.unloads = 0

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        backend: Backend | None = None,
        backend_factory: Callable[[ModelCard], Backend] | None = None,
    ) -> ModelPool:
        """The pool of ``settings.llm.model``; ``backend``: a ready-made one for it (tests);
        ``backend_factory``: builds the backend of any other model (tests)."""
        card = get_card(settings.llm.model, data_dir=settings.data_dir)
        return cls(settings, ModelRunner(settings, card, backend), backend_factory)

    async def start(self) -> None:
        await self._default.start()
        self._reaper = asyncio.create_task(self._reap(), name="model-pool-reaper")

    async def close(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
        for task in self._loading.values():
            task.cancel()
        for runner in reversed(list(self._runners.values())):
            await runner.close()
        self._runners = {}

    @property
    def default(self) -> ModelRunner:
        """The model requests get when they name the server's generator."""
        return self._default

    @property
    def runners(self) -> list[ModelRunner]:
        return list(self._runners.values())

    @property
    def ready(self) -> bool:
        return self._default.ready

    def is_loaded(self, model: str) -> bool:
        return model in self._runners

    def resident_bytes(self) -> int:
        return sum(self.estimate_bytes(r.card) for r in self._runners.values())

    def file_bytes(self, card: ModelCard) -> int:
        """Size of the card's model file(s) (the card's ``weight_bytes`` when not installed)."""
        path = model_path(card, self.settings.models_dir)
        try:
            if path.is_dir():
                return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            return path.stat().st_size
        except OSError:
            return card.weight_bytes or 0

    def estimate_bytes(self, card: ModelCard) -> int:
        """Memory a loaded model takes: its file(s) plus the KV cache, estimated."""
        return self.file_bytes(card) + self.settings.llm.kv_cells * KV_BYTES_PER_CELL

    def get(self, model: str) -> ModelRunner:
        """The loaded runner of card id ``model``; 404 ``model_not_found`` otherwise."""
        runner = self._runners.get(model)
        if runner is None:
            raise NotFoundError(
                f"The model {model!r} is not loaded; loaded: {sorted(self._runners)}",
                param="model",
                code="model_not_found",
            )
        return runner

    async def acquire(self, model: str, keep_alive: float | None = None) -> ModelRunner:
        """The runner for ``model``, loaded if needed (no lease: it may be unloaded once idle)."""
        async with self.lease(model, keep_alive) as runner:
            return runner

    @contextlib.asynccontextmanager
    async def lease(
        self, model: str, keep_alive: float | None = None
    ) -> AsyncIterator[ModelRunner]:
        """Hold ``model`` loaded for the duration of the block (loading it first if needed).

        ``keep_alive``: seconds it stays loaded after this request (bounded by
        ``[models] max_keep_alive_s``; 0 unloads it as soon as it is idle)."""
        runner = self._runners.get(model)
        if runner is None:
            runner = await self._load(model)
        self._leases[model] = self._leases.get(model, 0) + 1
        try:
            yield runner
        finally:
            self._leases[model] -= 1
            runner.last_used = time.monotonic()
            self._expires[model] = runner.last_used + self._keep_alive(keep_alive)
            self._changed.set()

    def _keep_alive(self, keep_alive: float | None) -> float:
        cfg = self.settings.models
        if keep_alive is None:
            return cfg.keep_alive_s
        return max(0.0, min(float(keep_alive), cfg.max_keep_alive_s))

    async def _load(self, model: str) -> ModelRunner:
        task = self._loading.get(model)
        if task is None:
            task = asyncio.create_task(self._load_once(model), name=f"load-{model}")
            self._loading[model] = task
            task.add_done_callback(lambda _t: self._loading.pop(model, None))
        return await asyncio.shield(task)

    async def _load_once(self, model: str) -> ModelRunner:
        try:
            card = get_card(model, data_dir=self.settings.data_dir)
        except KeyError:
            card = None
        if card is None or not _generates(card):
            raise NotFoundError(
                f"The model {model!r} does not exist or cannot generate; "
                f"known: {sorted(self.known_ids())}",
                param="model",
                code="model_not_found",
            )
        need = self.estimate_bytes(card)
        await self._make_room(model, need)
        backend = self._backend_factory(card) if self._backend_factory else None
        settings = self.settings
        if settings.llm.max_model_len > card.context_length:  # capped at the card's own
            llm = dataclasses.replace(settings.llm, max_model_len=card.context_length)
            settings = dataclasses.replace(settings, llm=llm)
        runner = ModelRunner(settings, card, backend)
        try:
            await runner.start()
        except FileNotFoundError as exc:
            await runner.close()
            raise NotFoundError(
                f"The model {model!r} is not installed: {exc}",
                param="model",
                code="model_not_found",
            ) from None
        except BaseException:
            await runner.close()
            raise
        self._runners[model] = runner
        self._expires[model] = time.monotonic() + self.settings.models.keep_alive_s
        self.loads += 1
        log.info("model loaded on use: %s (~%d MiB)", model, need // 2**20)
        return runner

    def known_ids(self) -> list[str]:
        """Ids of the installed cards that can generate."""
        return [c.id for c in self.installed_cards() if _generates(c)]

    def installed_cards(self) -> list[ModelCard]:
        """Every card (shipped or the user's) whose model file is in the models directory."""
        return [
            c
            for c in list_cards(self.settings.data_dir)
            if c.id in self._runners or model_path(c, self.settings.models_dir).exists()
        ]

    def card_of(self, model: str, capability: str) -> ModelCard:
        """The installed card ``model`` with ``capability``; 404 naming the choices otherwise."""
        runner = self._runners.get(model)
        if runner is not None and runner.card.supports(capability):
            return runner.card
        cards = [c for c in self.installed_cards() if c.supports(capability)]
        for card in cards:
            if card.id == model:
                return card
        raise NotFoundError(
            f"The model {model!r} does not exist or cannot serve {capability}; "
            f"available: {sorted(c.id for c in cards)}",
            param="model",
            code="model_not_found",
        )

    async def _make_room(self, model: str, need: int) -> None:
        budget = self.settings.models.max_resident_bytes
        if budget <= 0:
            return
        deadline = time.monotonic() + self.settings.models.load_wait_s
        while self.resident_bytes() + need > budget:
            victim = self._idle_lru()
            if victim is not None:
                await self._unload(victim, "to make room for " + model)
                continue
            left = deadline - time.monotonic()
            if left <= 0:
                raise OverloadedError(
                    f"no room to load {model!r}: [models] max_resident_bytes={budget} is taken "
                    f"by models in use ({sorted(self._runners)}); retry shortly",
                    retry_after=max(1, int(self.settings.models.load_wait_s)),
                )
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout=min(left, REAP_S))

    def _idle_lru(self) -> str | None:
        idle = [
            r
            for mid, r in self._runners.items()
            if r is not self._default and self._leases.get(mid, 0) == 0 and r.inflight == 0
        ]
        if not idle:
            return None
        return min(idle, key=lambda r: r.last_used).card.id

    async def _unload(self, model: str, why: str) -> None:
        runner = self._runners.pop(model)
        self._expires.pop(model, None)
        self.unloads += 1
        log.info("model unloaded (%s): %s", why, model)
        await runner.close()
        self._changed.set()

    async def expire(self) -> None:
        """Unload every idle model past its keep-alive (the reaper calls this each second)."""
        now = time.monotonic()
        for mid, runner in list(self._runners.items()):
            if (
                runner is not self._default
                and self._leases.get(mid, 0) == 0
                and runner.inflight == 0
                and self._expires.get(mid, now + 1) <= now
            ):
                await self._unload(mid, "keep-alive expired")

    async def _reap(self) -> None:
        while True:
            await asyncio.sleep(REAP_S)
            try:
                await self.expire()
            except Exception:  # noqa: BLE001 - tried again at the next tick
                log.exception("unloading idle models failed")
