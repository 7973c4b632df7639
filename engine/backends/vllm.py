"""vLLM backend: the v1 ``AsyncLLM`` engine in-process, behind the same protocol as llama.cpp.

The engine runs its own asyncio loop on one thread owned by this backend (the "backend thread"),
so the protocol's threading contract holds: ``submit``/``abort`` hand work to that loop and return
at once; the sink is called from the loop thread with the outputs of one vLLM step for one
sequence. vLLM itself starts its engine-core process with spawn, so whatever builds this backend
must run in a server process or under ``if __name__ == "__main__":``.

Token-level semantics match the llama.cpp backend: the backend stops on the request's
``eos_token_ids`` (and ``stop_token_ids``), reports the stop token itself as the last
``TokenOutput`` with ``finish_reason=STOP``, and leaves stop *strings* to the engine, which aborts
the sequence when one matches. Structured output uses vLLM's own guidance (llguidance) backend on
the grammar the engine compiled for the request (``constraint.grammar``), so a constraint means
the same thing on both backends.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import threading
from collections.abc import Sequence
from concurrent.futures import Future
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any

from engine.errors import BackendError, InvalidRequestError, UnprocessableError
from engine.types import (
    BackendOutput,
    BackendRequest,
    BackendStats,
    FinishReason,
    PromptLogprobs,
    SamplingParams,
    SequenceFinished,
    TokenOutput,
    TopLogprob,
)
from models.store import verify_model

if TYPE_CHECKING:
    from llguidance import LLTokenizer

    from configs import Settings
    from engine.backends.base import Sink
    from models import ModelCard

log = logging.getLogger(__name__)

_BYTE_PIECE = re.compile(r"^<0x([0-9A-Fa-f]{2})>$")
_FINISH = {"stop": FinishReason.STOP, "length": FinishReason.LENGTH, "abort": FinishReason.ABORT}
# Most top logprobs a request may ask for (OpenAI allows 20).
MAX_LOGPROBS = 20


def vllm_sampling_params(request: BackendRequest, structured: Any | None = None) -> Any:
    """Translate Hearth's sampling parameters to vLLM's (one sequence: n is always 1 here)."""
    from vllm import SamplingParams as VSamplingParams
    from vllm.sampling_params import RequestOutputKind

    p: SamplingParams = request.params
    stop_ids = set(p.stop_token_ids)
    if not p.ignore_eos:
        stop_ids |= set(request.eos_token_ids)
    return VSamplingParams(
        n=1,
        max_tokens=p.max_tokens,
        min_tokens=p.min_tokens,
        temperature=p.temperature,
        top_p=p.top_p,
        top_k=p.top_k if p.top_k > 0 else 0,
        min_p=p.min_p,
        seed=p.seed,
        presence_penalty=p.presence_penalty,
        frequency_penalty=p.frequency_penalty,
        repetition_penalty=p.repetition_penalty,
        logit_bias=dict(p.logit_bias) or None,
        # EOS is handled through stop_token_ids so that the request's own EOS set decides.
        ignore_eos=True,
        stop_token_ids=sorted(stop_ids) or None,
        logprobs=p.logprobs,
        prompt_logprobs=(p.logprobs or 0) if p.prompt_logprobs else None,
        detokenize=False,
        skip_special_tokens=False,
        output_kind=RequestOutputKind.DELTA,
        structured_outputs=structured,
    )


def structured_outputs(request: BackendRequest) -> Any | None:
    """vLLM's structured-output spec for the request's constraint, or None when unconstrained.

    The constraint carries the llguidance grammar the engine compiled (``grammar``): Lark text, or
    llguidance's JSON form holding one Lark grammar or one JSON Schema (whose ``x-guidance`` keeps
    the engine's options). vLLM's guidance backend rebuilds the same llguidance grammar from it.
    Anything else cannot be honoured here: fail closed.
    """
    if request.constraint is None:
        return None
    from vllm.sampling_params import StructuredOutputsParams

    grammar = request.constraint.grammar
    if isinstance(grammar, str) and grammar and not grammar.lstrip().startswith("{"):
        return StructuredOutputsParams(grammar=grammar)
    parts = _llguidance_parts(grammar)
    if parts is not None and len(parts) == 1:
        part = parts[0]
        if part.get("lark_grammar"):
            return StructuredOutputsParams(grammar=part["lark_grammar"])
        if part.get("json_schema") is not None:
            return StructuredOutputsParams(json=part["json_schema"])
    raise UnprocessableError(
        "this response_format cannot be enforced on the vLLM backend", param="response_format"
    )


def _llguidance_parts(grammar: object) -> list[dict] | None:
    import json

    if not isinstance(grammar, str):
        return None
    try:
        body = json.loads(grammar)
    except ValueError:
        return None
    if not isinstance(body, dict) or body.get("max_tokens") is not None:
        return None
    parts = body.get("grammars")
    return parts if isinstance(parts, list) and all(isinstance(p, dict) for p in parts) else None


class VLLMBackend:
    """vLLM ``AsyncLLM`` on a Hugging Face folder (a card of format ``hf``)."""

    name = "vllm"

    def __init__(self, settings: Settings, card: ModelCard):
        if card.format != "hf":
            raise ValueError(f"model {card.id!r}: the vLLM backend needs a card of format 'hf'")
        self.settings = settings
        self.card = card
        self.path: Path = verify_model(card, settings.models_dir)
        self._sink: Sink | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._engine: Any | None = None
        self._tasks: dict[str, asyncio.Task] = {}
        self._steps = 0
        self._closed = False

    # ---- model facts -------------------------------------------------------------------------

    @cached_property
    def tokenizer(self) -> Any:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(self.path))

    @cached_property
    def _generation_config(self) -> dict:
        import json

        file = self.path / "generation_config.json"
        return json.loads(file.read_text()) if file.exists() else {}

    @property
    def n_vocab(self) -> int:
        return len(self.tokenizer)

    @property
    def eos_token_ids(self) -> frozenset[int]:
        eos = self._generation_config.get("eos_token_id", self.tokenizer.eos_token_id)
        return frozenset(eos if isinstance(eos, list) else [eos])

    @property
    def bos_token_id(self) -> int | None:
        return self.tokenizer.bos_token_id

    @property
    def max_model_len(self) -> int:
        return min(self.settings.llm.max_model_len, self.card.context_length)

    @cached_property
    def _special_ids(self) -> frozenset[int]:
        decoder = self.tokenizer.added_tokens_decoder
        return frozenset(i for i, tok in decoder.items() if tok.special)

    def grammar_tokenizer(self) -> LLTokenizer:
        """The llguidance tokenizer of this vocabulary (engine.grammar compiles with it, ~1 s)."""
        import llguidance.hf

        return llguidance.hf.from_tokenizer(
            self.tokenizer, n_vocab=self.n_vocab, eos_token=sorted(self.eos_token_ids)
        )

    def tokenize(self, text: str, *, add_bos: bool, parse_special: bool) -> list[int]:
        ids = self.tokenizer(
            text, add_special_tokens=False, split_special_tokens=not parse_special
        )["input_ids"]
        bos = self.bos_token_id
        return ([bos] if add_bos and bos is not None else []) + list(ids)

    def token_text(self, token_id: int) -> str:
        piece = self.tokenizer.convert_ids_to_tokens(token_id)
        return piece.replace("\u2581", " ") if piece is not None else ""

    def token_bytes(self, token_id: int) -> bytes:
        if token_id in self._special_ids:
            return b""
        piece = self.tokenizer.convert_ids_to_tokens(token_id) or ""
        byte = _BYTE_PIECE.match(piece)
        if byte:
            return bytes([int(byte.group(1), 16)])
        return piece.replace("\u2581", " ").encode()

    # ---- lifecycle ---------------------------------------------------------------------------

    def engine_args(self) -> Any:
        """vLLM ``AsyncEngineArgs`` from ``[llm]`` and ``[vllm]`` settings."""
        from vllm.engine.arg_utils import AsyncEngineArgs

        vs = self.settings.vllm
        return AsyncEngineArgs(
            model=str(self.path),
            tokenizer=str(self.path),
            served_model_name=[self.card.id],
            dtype=vs.dtype,
            quantization=vs.quantization or self.card.quantization or None,
            max_model_len=self.max_model_len,
            max_num_seqs=self.settings.llm.max_running,
            gpu_memory_utilization=vs.gpu_memory_utilization,
            tensor_parallel_size=vs.tensor_parallel_size,
            pipeline_parallel_size=vs.pipeline_parallel_size,
            distributed_executor_backend=vs.distributed_executor_backend or None,
            enforce_eager=vs.enforce_eager,
            enable_prefix_caching=self.settings.llm.prefix_cache,
            max_logprobs=MAX_LOGPROBS,
            generation_config="vllm",  # Hearth's request defaults, not the folder's
            structured_outputs_config={"backend": vs.structured_outputs_backend},
            disable_log_stats=True,
            seed=0,
        )

    def start(self, sink: Sink) -> None:
        """Build the engine on the backend thread; returns when it can take requests."""
        if self._thread is not None:
            raise RuntimeError("backend already started")
        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(self.settings.vllm.cpu_kvcache_gib))
        self._sink = sink
        ready: Future[None] = Future()
        self._thread = threading.Thread(target=self._run_loop, args=(ready,), name="vllm-backend")
        self._thread.daemon = True
        self._thread.start()
        ready.result()  # re-raises a failed start here
        log.info("vLLM engine ready on %s (%s)", self.card.id, self.path)

    def _run_loop(self, ready: Future[None]) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(self._boot())
        except BaseException as exc:  # noqa: BLE001 - reported to start()'s caller
            ready.set_exception(exc)
            loop.close()
            return
        ready.set_result(None)
        loop.run_forever()
        loop.close()

    async def _boot(self) -> None:
        from vllm.v1.engine.async_llm import AsyncLLM

        self._engine = AsyncLLM.from_engine_args(self.engine_args())

    def is_stepping(self) -> bool:
        return (
            not self._closed
            and self._thread is not None
            and self._thread.is_alive()
            and self._engine is not None
            and not getattr(self._engine, "errored", False)
        )

    def stats(self) -> BackendStats:
        return BackendStats(
            running=len(self._tasks),
            waiting=0,
            kv_cells_used=0,
            kv_cells_total=0,
            steps=self._steps,
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = self._loop
        if loop is not None and loop.is_running():
            asyncio.run_coroutine_threadsafe(self._shutdown(), loop).result(timeout=60)
            loop.call_soon_threadsafe(loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=60)

    async def _shutdown(self) -> None:
        for task in list(self._tasks.values()):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)
        if self._engine is not None:
            self._engine.shutdown()
            self._engine = None

    # ---- requests ----------------------------------------------------------------------------

    def submit(self, request: BackendRequest) -> None:
        """Validate and queue; errors in the request raise here, before anything is queued."""
        if self._loop is None or self._closed:
            raise BackendError("the vLLM backend is not running")
        _check(request, self.max_model_len)
        params = vllm_sampling_params(request, structured_outputs(request))
        self._loop.call_soon_threadsafe(self._spawn, request, params)

    def abort(self, request_id: str) -> None:
        if self._loop is not None and not self._closed:
            self._loop.call_soon_threadsafe(self._cancel, request_id)

    def _cancel(self, request_id: str) -> None:
        task = self._tasks.get(request_id)
        if task is not None:
            task.cancel()  # vLLM's generate() aborts the request when cancelled

    def _spawn(self, request: BackendRequest, params: Any) -> None:
        if request.request_id in self._tasks:
            self._emit([SequenceFinished(request.request_id, FinishReason.ABORT, "duplicate id")])
            return
        task = asyncio.get_running_loop().create_task(self._generate(request, params))
        self._tasks[request.request_id] = task

    async def _generate(self, request: BackendRequest, params: Any) -> None:
        rid = request.request_id
        finished = False
        try:
            prompt: dict[str, Any] = {"prompt_token_ids": list(request.prompt_tokens)}
            if request.cache_salt:  # prefix caching within one tenant only
                prompt["cache_salt"] = request.cache_salt
            async for out in self._engine.generate(prompt, params, rid):
                outputs = self._outputs(request, out)
                finished = finished or any(
                    getattr(o, "finish_reason", None) is not None for o in outputs
                )
                self._steps += 1
                self._emit(outputs)
        except asyncio.CancelledError:
            pass
        except Exception as exc:  # noqa: BLE001 - reported as this sequence's failure
            log.exception("vLLM request %s failed", rid)
            finished = True
            self._emit([SequenceFinished(rid, FinishReason.ABORT, error=str(exc))])
        finally:
            self._tasks.pop(rid, None)
            if not finished:
                self._emit([SequenceFinished(rid, FinishReason.ABORT)])

    def _outputs(self, request: BackendRequest, out: Any) -> list[BackendOutput]:
        """TokenOutputs (and prompt logprobs) of one vLLM step for one sequence."""
        rid, k, constraint = request.request_id, request.params.logprobs or 0, request.constraint
        result: list[BackendOutput] = []
        if out.prompt_logprobs is not None:
            result.append(_prompt_logprobs(rid, out.prompt_logprobs, k))
        completion = out.outputs[0]
        tokens = list(completion.token_ids)
        logprobs = completion.logprobs or []
        reason = _FINISH.get(completion.finish_reason) if completion.finish_reason else None
        for i, token in enumerate(tokens):
            last = i == len(tokens) - 1
            entry = logprobs[i] if i < len(logprobs) else None
            lp, top = _token_logprobs(token, entry, k)
            if constraint is not None:  # keeps the engine's view of the grammar state current
                constraint.advance(token)
            result.append(TokenOutput(rid, token, lp, top, reason if last else None))
        if completion.finish_reason and not tokens:
            result.append(SequenceFinished(rid, reason or FinishReason.ABORT))
        return result

    def _emit(self, outputs: Sequence[BackendOutput]) -> None:
        if outputs and self._sink is not None:
            self._sink(outputs)


def _check(request: BackendRequest, max_model_len: int) -> None:
    p = request.params
    if not request.prompt_tokens:
        raise InvalidRequestError("the prompt is empty", param="prompt")
    if p.logprobs is not None and not 0 <= p.logprobs <= MAX_LOGPROBS:
        raise InvalidRequestError(
            f"logprobs must be between 0 and {MAX_LOGPROBS}", param="logprobs"
        )
    if len(request.prompt_tokens) + p.max_tokens > max_model_len:
        from engine.errors import ContextLengthError

        raise ContextLengthError(
            f"{len(request.prompt_tokens)} prompt tokens + max_tokens {p.max_tokens} exceed the "
            f"context of {max_model_len} tokens"
        )


def _token_logprobs(
    token: int, entry: dict | None, k: int
) -> tuple[float | None, tuple[TopLogprob, ...]]:
    """The token's own logprob and the ``k`` most likely tokens, best first."""
    if entry is None:
        return None, ()
    chosen = entry.get(token)
    ranked = sorted(
        (v.rank, tid, v.logprob) for tid, v in entry.items() if v.rank is not None and v.rank <= k
    )
    top = tuple(TopLogprob(tid, float(logprob)) for _rank, tid, logprob in ranked)
    return (float(chosen.logprob) if chosen is not None else None), top


def _prompt_logprobs(rid: str, entries: Sequence[dict | None], k: int) -> PromptLogprobs:
    logprobs: list[float | None] = []
    tops: list[tuple[TopLogprob, ...]] = []
    # vLLM gives one entry per prompt token; the first is None (nothing precedes it).
    for entry in entries:
        if entry is None:
            logprobs.append(None)
            tops.append(())
            continue
        # vLLM puts the prompt token itself first, then the top k.
        lp, top = _token_logprobs(next(iter(entry)), entry, k)
        logprobs.append(lp)
        tops.append(top)
    return PromptLogprobs(rid, tuple(logprobs), tuple(tops))
