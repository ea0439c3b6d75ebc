"""The engine loop: accept requests, run one scheduled forward pass per step, and turn sampled tokens into
incremental outputs (stop conditions, detokenized text, timings).

Single-threaded, as in nano-vllm: every method is called from one thread. The server's engine thread
(`engine_thread.py`) is the one place that hands requests over from other threads."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass

import torch

from goodput.worker_image.block_manager import BlockManager
from goodput.worker_image.config import EngineConfig
from goodput.worker_image.grammar import GrammarError, Grammars
from goodput.worker_image.model_runner import ModelRunner
from goodput.worker_image.sampling import InvalidParameterError, Priority, SamplingParams
from goodput.worker_image.scheduler import Scheduler
from goodput.worker_image.sequence import Sequence
from goodput.worker_image.tokenizer import detokenize_incrementally


class QueueFullError(Exception):
    """The bounded waiting queue is full; the caller should retry later (HTTP 429)."""


@dataclass
class RequestOutput:
    request_id: str
    new_token_ids: list[int]
    new_text: str
    new_logprobs: list[float] | None
    finished: bool
    finish_reason: str | None  # "stop" | "length" | "abort"
    num_prompt_tokens: int
    num_output_tokens: int
    num_cached_tokens: int
    arrival_time: float
    first_scheduled_time: float | None
    first_token_time: float | None
    new_top_logprobs: list[list[tuple[int, float]]] | None = None  # per new token: (token id, logprob)


@dataclass
class EngineStats:
    num_running: int
    num_waiting: int
    kv_cache_usage: float
    num_free_blocks: int
    num_total_blocks: int
    prefix_cache_queries: int
    prefix_cache_hits: int
    num_preemptions: int


class LLMEngine:
    def __init__(self, config: EngineConfig) -> None:
        self.config = config
        self.runner = ModelRunner(config)
        self.tokenizer = self.runner.tokenizer
        self.model_config = self.runner.model_config
        self.block_manager = BlockManager(
            self.runner.num_blocks, config.block_size, config.enable_prefix_caching
        )
        self.scheduler = Scheduler(config, self.block_manager)
        self.grammars = Grammars(self.tokenizer, self.model_config.vocab_size)
        self._aborts: set[str] = set()
        self._seqs: dict[str, Sequence] = {}  # requests added and not yet finished
        self.deferred_until: float | None = None  # the batch window the last step waits out, if any

    def close(self) -> None:
        """Stop the tensor-parallel ranks, if any; the engine is unusable afterwards."""
        self.runner.close()

    def check_request(self, prompt_token_ids: list[int], params: SamplingParams) -> None:
        """Raise ValueError if the request cannot run; reads only the configuration, so any thread may call it."""
        n, limit, vocab = len(prompt_token_ids), self.config.max_model_len, self.model_config.vocab_size
        if n == 0:
            raise ValueError("prompt is empty")
        if n + params.max_tokens > limit:
            raise ValueError(
                f"prompt ({n} tokens) plus max_tokens ({params.max_tokens}) exceeds max_model_len ({limit})"
            )
        if not all(0 <= t < vocab for t in prompt_token_ids):
            raise ValueError(f"prompt token ids must be in [0, {vocab})")
        if any(t >= vocab for t in params.logit_bias):
            raise InvalidParameterError(
                "logit_bias", f"invalid logit_bias: token ids must be in [0, {vocab})"
            )
        if params.grammar is not None:
            try:
                self.grammars.check(params.grammar)
            except GrammarError as exc:
                raise InvalidParameterError("grammar", f"invalid grammar: {exc}") from None

    def add_request(
        self,
        request_id: str,
        prompt_token_ids: list[int],
        params: SamplingParams,
        priority: Priority = Priority.INTERACTIVE,
    ) -> None:
        self.check_request(prompt_token_ids, params)
        if request_id in self._seqs:
            raise ValueError(f"request id {request_id!r} is already in use")
        if self.queue_full():
            raise QueueFullError(f"waiting queue is full ({self.config.max_waiting} requests)")
        seq = Sequence(request_id, list(prompt_token_ids), params, Priority(priority), time.monotonic())
        if params.seed is not None:
            seq.generator = torch.Generator(self.config.device).manual_seed(params.seed)
        if params.grammar is not None:
            seq.matcher = self.grammars.matcher(params.grammar)
        self._seqs[request_id] = seq
        self.scheduler.add(seq)

    def queue_full(self, arriving: int = 0) -> bool:
        """Whether max_waiting requests would still wait, `arriving` more included, once the next step fills
        the free batch slots. Counting the raw queue would refuse requests while the slots of a batch that
        just finished are empty."""
        free_slots = max(0, self.config.max_num_seqs - len(self.scheduler.running))
        return arriving + self.scheduler.num_waiting - free_slots >= self.config.max_waiting

    def abort_request(self, request_id: str) -> None:
        """The next step finishes the request with reason "abort" (and frees its blocks)."""
        if request_id in self._seqs:
            self._aborts.add(request_id)

    def has_unfinished_requests(self) -> bool:
        return bool(self._seqs)

    def stats(self) -> EngineStats:
        bm, sched = self.block_manager, self.scheduler
        return EngineStats(
            num_running=len(sched.running),
            num_waiting=sched.num_waiting,
            kv_cache_usage=bm.usage(),
            num_free_blocks=bm.num_free_blocks,
            num_total_blocks=bm.num_total_blocks,
            prefix_cache_queries=bm.queries,
            prefix_cache_hits=bm.hits,
            num_preemptions=sched.num_preemptions,
        )

    def step(self) -> list[RequestOutput]:
        """One forward pass. When the scheduler holds the batch open for its window, nothing runs and
        `deferred_until` says until when; the caller decides how to wait (new requests may end it)."""
        aborts, self._aborts = self._aborts, set()
        outputs = [self._finish(self._seqs[rid], "abort") for rid in aborts if rid in self._seqs]
        plan = self.scheduler.schedule()
        self.deferred_until = plan.defer_until if not plan.scheduled else None
        if not plan.scheduled:
            return outputs
        sampled_seqs, sampled = self.runner.run(plan.scheduled)
        for seq, n in plan.scheduled:
            seq.num_computed_tokens += n
            self.block_manager.commit(seq)
        if sampled is None:
            return outputs
        now = time.monotonic()
        for i, seq in enumerate(sampled_seqs):
            lp, top = sampled.logprobs[i], sampled.top_logprobs[i]
            outputs.append(self._append(seq, sampled.token_ids[i], lp, top, now))
        return outputs

    def _append(
        self, seq: Sequence, token: int, lp: float | None, top: list[tuple[int, float]] | None, now: float
    ) -> RequestOutput:
        params = seq.params
        seq.token_ids.append(token)
        if seq.first_token_time is None:
            seq.first_token_time = now
        reason = None
        stop_token = token in params.stop_token_ids or (
            token == self.tokenizer.eos_token_id and not params.ignore_eos
        )
        if stop_token:
            reason = "stop"
        elif seq.matcher is not None and seq.matcher.advance(token):
            reason = "stop"  # the grammar is complete (a closed JSON value): nothing but EOS could follow
        elif seq.num_output_tokens >= params.max_tokens:
            reason = "length"
        # A stop token's own text is not output, but bytes held back before it as an incomplete character
        # are: as U+FFFD, as when the length limit cuts one off.
        delta, seq.prefix_offset, seq.read_offset = detokenize_incrementally(
            self.tokenizer,
            seq.token_ids[:-1] if stop_token else seq.token_ids,
            seq.prefix_offset,
            seq.read_offset,
            final=reason is not None,
        )
        seq.output_text += delta
        if params.stop and not stop_token:
            search_from = max(0, len(seq.output_text) - len(delta) - max(map(len, params.stop)) + 1)
            hits = [i for s in params.stop if (i := seq.output_text.find(s, search_from)) >= 0]
            if hits:
                seq.output_text = seq.output_text[: min(hits)]
                reason = "stop"
        out = self._finish(seq, reason) if reason else self._output(seq)
        out.new_token_ids = [token]
        if lp is not None:
            out.new_logprobs, out.new_top_logprobs = [lp], [top or []]
        return out

    def _output(self, seq: Sequence) -> RequestOutput:
        """Emit new text, holding back a tail that could still grow into a stop string."""
        hold = 0 if seq.finish_reason or not seq.params.stop else max(map(len, seq.params.stop)) - 1
        upto = max(seq.num_emitted_chars, len(seq.output_text) - hold)
        text, seq.num_emitted_chars = seq.output_text[seq.num_emitted_chars : upto], upto
        return RequestOutput(
            request_id=seq.request_id,
            new_token_ids=[],
            new_text=text,
            new_logprobs=None,
            finished=seq.finish_reason is not None,
            finish_reason=seq.finish_reason,
            num_prompt_tokens=seq.num_prompt_tokens,
            num_output_tokens=seq.num_output_tokens,
            num_cached_tokens=seq.num_cached_tokens,
            arrival_time=seq.arrival_time,
            first_scheduled_time=seq.first_scheduled_time,
            first_token_time=seq.first_token_time,
        )

    def _finish(self, seq: Sequence, reason: str) -> RequestOutput:
        seq.finish_reason = reason
        self.scheduler.remove(seq)
        del self._seqs[seq.request_id]
        return self._output(seq)

    def generate(
        self, prompts: list[list[int]], params: SamplingParams | list[SamplingParams]
    ) -> list[list[int]]:
        """Run prompts to completion (offline use: tests, benchmarks); returns output token ids in order."""
        plist = params if isinstance(params, list) else [params] * len(prompts)
        tag = uuid.uuid4().hex[:8]
        ids = [f"generate-{tag}-{i}" for i in range(len(prompts))]
        results: dict[str, list[int]] = {rid: [] for rid in ids}
        pending = list(zip(ids, prompts, plist, strict=True))
        done = 0
        while done < len(ids):
            while pending:
                try:
                    self.add_request(*pending[0])
                except QueueFullError:
                    break
                pending.pop(0)
            outputs = self.step()
            if self.deferred_until is not None:  # nothing else can arrive: sleep out the batch window
                time.sleep(max(0.0, self.deferred_until - time.monotonic()))
            for out in outputs:
                if out.request_id in results:
                    results[out.request_id].extend(out.new_token_ids)
                    done += out.finished
        return [results[rid] for rid in ids]
