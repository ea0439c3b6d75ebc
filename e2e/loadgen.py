"""Open-loop load generator: streams OpenAI completions at a Service's pods, measuring TTFT and TPOT.

A schedule is a list of arrivals (time, prompt tokens, output tokens): a slice of the Azure LLM code
trace (Patel et al., "Splitwise", ISCA 2024; Azure public dataset 2023, CC-BY 4.0) time-compressed and
rate-scaled, a Poisson rate, or a step profile of Poisson rates. Requests start at their arrival time
whether or not earlier ones finished (open loop), each on the least-loaded backend of those the Service
routes to right now (refreshed every second, so draining pods drop out as they would from endpoints).
Prompts are token ids, so prompt lengths are exact; ``ignore_eos`` makes outputs exactly as long as asked.

Client-side, per request: TTFT (send → first token), TPOT ((last − first token) / (tokens − 1)), end to
end, and the failure if any (HTTP status, an SSE error event, a transport error, a truncated stream).
A closed loop (:func:`saturate`) keeps a fixed number of requests open instead: what completes per second
is the backends' capacity. Bounded: at most ``max_requests`` arrivals, ``max_in_flight`` open streams, ``deadline_s`` in all.
Local only: a backend outside loopback and the stacks' range (198.18.0.0/15, the real node's pods) is refused.

CLI: ``python -m e2e.loadgen --target 127.0.0.5:8000 --profile poisson:4:30 --json out/load.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import itertools
import json
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx
import numpy as np

from e2e import hostnet
from goodput.policies import workloads

VOCAB = 512  # token ids stay inside the tiny preset's vocabulary
REFRESH_S = 1.0


@dataclass(frozen=True)
class Arrival:
    at_s: float
    prompt_tokens: int
    output_tokens: int
    prompt: tuple[int, ...] = ()  # the prompt's token ids when they matter (shared prefixes); else random


@dataclass
class Result:
    """One request as the client saw it; times in seconds from the run's start."""

    start_s: float
    prompt_tokens: int
    output_tokens: int  # asked for
    backend: str = ""
    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float | None = None
    tokens: int = 0  # received
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Run:
    """Results so far (completed requests, in completion order) and the requests still open."""

    started: float = field(default_factory=time.monotonic)
    results: list[Result] = field(default_factory=list)
    in_flight: int = 0
    sent_at: list[float] = field(default_factory=list)  # when each request was sent

    @property
    def sent(self) -> int:
        return len(self.sent_at)

    def now(self) -> float:
        return time.monotonic() - self.started


# --- schedules ----------------------------------------------------------------------------------------


def clip(prompt: np.ndarray, output: np.ndarray, max_prompt: int, max_output: int) -> tuple[np.ndarray, ...]:
    return np.clip(prompt, 1, max_prompt), np.clip(output, 1, max_output)


def azure_slice(
    start_s: float,
    duration_s: float,
    *,
    compress: float = 1.0,
    scale: float = 1.0,
    max_prompt: int = 512,
    max_output: int = 64,
    seed: int = 0,
    csv: str | Path = workloads.AZURE_CODE_TRACE,
) -> list[Arrival]:
    """``duration_s`` of trace time from ``start_s``, played ``compress`` times faster at ``scale`` x rate.

    Token lengths are clipped to what the tiny CPU model can serve (its context and a short output).
    """
    trace = workloads.load_csv(csv)
    if scale != 1.0:
        trace = workloads.scale_rate(trace, scale, seed=seed)
    keep = (trace.arrival_s >= start_s) & (trace.arrival_s < start_s + duration_s)
    at = (trace.arrival_s[keep] - start_s) / compress
    prompt, output = clip(trace.prompt_tokens[keep], trace.output_tokens[keep], max_prompt, max_output)
    return [Arrival(float(t), int(p), int(o)) for t, p, o in zip(at, prompt, output, strict=True)]


def poisson(
    rps: float, duration_s: float, *, prompt: int = 64, output: int = 16, offset_s: float = 0.0, seed: int = 0
) -> list[Arrival]:
    """Poisson arrivals at ``rps`` for ``duration_s``, fixed token lengths."""
    rng = np.random.default_rng(seed)
    times = np.cumsum(rng.exponential(1.0 / rps, int(rps * duration_s * 2 + 20))) if rps > 0 else np.array([])
    times = times[times < duration_s]
    return [Arrival(offset_s + float(t), prompt, output) for t in times]


def steps(
    profile: Sequence[tuple[float, float]], *, prompt: int = 64, output: int = 16, seed: int = 0
) -> list[Arrival]:
    """Consecutive (rps, seconds) Poisson phases: a load step up, or down to 0 rps."""
    arrivals: list[Arrival] = []
    offset = 0.0
    for i, (rps, seconds) in enumerate(profile):
        arrivals += poisson(rps, seconds, prompt=prompt, output=output, offset_s=offset, seed=seed + i)
        offset += seconds
    return arrivals


class LiveProfile:
    """Poisson arrivals whose rate a caller changes while they play (a load step up, then down); ``stop`` ends them.

    Iterate it in :func:`replay`: each next arrival is drawn at the rate set when the previous one was sent.
    """

    def __init__(self, rps: float, *, prompt: int = 64, output: int = 16, seed: int = 0) -> None:
        if rps <= 0:
            raise ValueError("a live profile needs a positive rate (lower it instead of removing it)")
        self.rps, self.prompt, self.output = rps, prompt, output
        self.rng = np.random.default_rng(seed)
        self.stopped = False
        self.changes: list[tuple[float, float]] = []  # (run time, new rps)

    def set(self, rps: float, at_s: float) -> None:
        if rps <= 0:
            raise ValueError("a live profile needs a positive rate")
        self.rps = rps
        self.changes.append((at_s, rps))

    def stop(self) -> None:
        self.stopped = True

    def arrivals(self, run: Run) -> Iterator[Arrival]:
        at = run.now()
        while not self.stopped:
            at = max(at, run.now() - 1.0) + float(self.rng.exponential(1.0 / self.rps))
            yield Arrival(at, self.prompt, self.output)


def parse_profile(text: str, max_prompt: int, max_output: int) -> list[Arrival]:
    """``poisson:RPS:SECONDS``, ``steps:RPS@SECONDS,RPS@SECONDS,...`` or ``azure:START:DURATION:COMPRESS:SCALE``."""
    kind, _, rest = text.partition(":")
    values = rest.split(":")
    if kind == "poisson":
        return poisson(
            float(values[0]), float(values[1]), prompt=min(64, max_prompt), output=min(16, max_output)
        )
    if kind == "steps":
        phases = [tuple(float(x) for x in part.split("@")) for part in rest.split(",")]
        return steps(phases, prompt=min(64, max_prompt), output=min(16, max_output))  # type: ignore[arg-type]
    if kind == "azure":
        start, duration, compress, scale = (float(v) for v in values)
        return azure_slice(
            start, duration, compress=compress, scale=scale, max_prompt=max_prompt, max_output=max_output
        )
    raise ValueError(
        f"unknown profile {text!r}: poisson:RPS:S, steps:RPS@S,..., azure:START:DUR:COMPRESS:SCALE"
    )


# --- the run ------------------------------------------------------------------------------------------


def local(backend: str) -> str:
    """The backend, if it is a loopback address or a stack's pod or Service (198.18.0.0/15)."""
    address = ipaddress.ip_address(backend.rsplit(":", 1)[0])
    if not (address.is_loopback or address in hostnet.STACK_RANGE):
        raise ValueError(
            f"backend {backend} is neither loopback nor in {hostnet.STACK_RANGE}; the load generator stays local"
        )
    return backend


class Balancer:
    """Least-open-streams choice among the current backends, refreshed off the event loop."""

    def __init__(self, source: Callable[[], list[str]]) -> None:
        self.source = source
        self.backends: list[str] = []
        self.open: dict[str, int] = {}

    async def refresh(self) -> None:
        backends = await asyncio.to_thread(self.source)
        self.backends = [local(b) for b in backends]

    def pick(self) -> str | None:
        if not self.backends:
            return None
        return min(self.backends, key=lambda b: self.open.get(b, 0))


async def one_request(
    client: httpx.AsyncClient, balancer: Balancer, arrival: Arrival, run: Run, seed: int
) -> None:
    result = Result(
        start_s=run.now(), prompt_tokens=arrival.prompt_tokens, output_tokens=arrival.output_tokens
    )
    backend = balancer.pick()
    if backend is None:
        result.error = "no backend"
        run.results.append(result)
        return
    result.backend = backend
    balancer.open[backend] = balancer.open.get(backend, 0) + 1
    rng = np.random.default_rng(seed)
    body = {
        "prompt": list(arrival.prompt) or rng.integers(1, VOCAB, arrival.prompt_tokens).tolist(),
        "max_tokens": arrival.output_tokens,
        "ignore_eos": True,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    began = time.monotonic()
    first = last = None
    try:
        async with client.stream("POST", f"http://{backend}/v1/completions", json=body) as resp:
            if resp.status_code != 200:
                await resp.aread()
                result.error = f"HTTP {resp.status_code}: {resp.text[:200]}"
            else:
                done = False
                async for line in resp.aiter_lines():
                    if not line.startswith("data: "):
                        continue
                    data = line.removeprefix("data: ")
                    if data == "[DONE]":
                        done = True
                        break
                    event = json.loads(data)
                    if "error" in event:
                        result.error = f"stream error: {event['error'].get('message', '')[:200]}"
                        break
                    if event.get("usage"):
                        result.tokens = int(event["usage"]["completion_tokens"])
                    if event.get("choices"):
                        last = time.monotonic()
                        first = first or last
                if result.error is None and not done:
                    result.error = "stream ended without [DONE]"
    except httpx.HTTPError as exc:
        result.error = f"{type(exc).__name__}: {exc}"
    finally:
        balancer.open[backend] -= 1
    end = time.monotonic()
    result.e2e_s = end - began
    if first is not None:
        result.ttft_s = first - began
        if last is not None and result.tokens > 1:
            result.tpot_s = (last - first) / (result.tokens - 1)
    if result.error is None and result.tokens != arrival.output_tokens:
        result.error = f"got {result.tokens} of {arrival.output_tokens} tokens"
    run.results.append(result)


async def replay(
    arrivals: Iterable[Arrival],
    backends: Callable[[], list[str]],
    *,
    run: Run | None = None,
    max_requests: int = 5000,
    max_in_flight: int = 256,
    deadline_s: float = 600.0,
    timeout_s: float = 60.0,
    headers: dict[str, str] | None = None,
) -> Run:
    """Send ``arrivals`` open-loop; returns when all finished (or at the deadline, cancelling the rest).

    ``run`` lets a caller watch results as they come (a live table); arrivals past the deadline or the
    request bound are not sent. ``headers`` go with every request (an API key, a tenant).
    """
    run = run or Run()
    balancer = Balancer(backends)
    await balancer.refresh()
    limits = httpx.Limits(max_connections=max_in_flight, max_keepalive_connections=max_in_flight)
    timeout = httpx.Timeout(timeout_s, connect=5.0)
    gate = asyncio.Semaphore(max_in_flight)
    tasks: set[asyncio.Task[None]] = set()

    async def refresher() -> None:
        while True:
            await asyncio.sleep(REFRESH_S)
            try:
                await balancer.refresh()
            except Exception as exc:  # an API hiccup: keep the last backends
                print(f"loadgen: backend refresh failed: {exc}", flush=True)

    async def guarded(arrival: Arrival, seed: int) -> None:
        async with gate:
            run.in_flight += 1
            try:
                await one_request(client, balancer, arrival, run, seed)
            finally:
                run.in_flight -= 1

    refreshing = asyncio.create_task(refresher())
    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False, headers=headers) as client:
        try:
            async with asyncio.timeout(deadline_s):
                for i, arrival in enumerate(itertools.islice(arrivals, max_requests)):
                    await asyncio.sleep(max(0.0, arrival.at_s - run.now()))
                    run.sent_at.append(run.now())
                    task = asyncio.create_task(guarded(arrival, seed=i))
                    tasks.add(task)
                    task.add_done_callback(tasks.discard)
                if tasks:
                    await asyncio.wait(tasks)
        except TimeoutError:
            for task in tasks:
                task.cancel()
        finally:
            refreshing.cancel()
    return run


async def saturate(
    backends: Callable[[], list[str]],
    *,
    prompt: int,
    output: int,
    concurrency: int,
    seconds: float,
    run: Run | None = None,
    timeout_s: float = 60.0,
    headers: dict[str, str] | None = None,
) -> Run:
    """Closed loop: ``concurrency`` clients, each sending its next request as soon as its last one ended,
    until ``seconds``. Work always waits at the backends, so what completes per second is their capacity
    (see :func:`throughput`); the requests still open at the end finish before this returns."""
    run = run or Run()
    balancer = Balancer(backends)
    await balancer.refresh()
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    timeout = httpx.Timeout(timeout_s, connect=5.0)

    async with httpx.AsyncClient(limits=limits, timeout=timeout, trust_env=False, headers=headers) as client:

        async def one_client(first_seed: int) -> None:
            for seed in itertools.count(first_seed, concurrency):
                if run.now() >= seconds:
                    return
                run.sent_at.append(run.now())
                run.in_flight += 1
                try:
                    await one_request(client, balancer, Arrival(run.now(), prompt, output), run, seed)
                finally:
                    run.in_flight -= 1

        await asyncio.gather(*(one_client(k) for k in range(concurrency)))
    return run


# --- summaries ----------------------------------------------------------------------------------------


def p95(values: Sequence[float]) -> float | None:
    return float(np.percentile(values, 95)) if values else None


def throughput(results: Sequence[Result], start_s: float, end_s: float) -> float:
    """Requests that completed without error between ``start_s`` and ``end_s`` of the run, per second."""
    done = [r for r in results if r.ok and r.e2e_s is not None and start_s <= r.start_s + r.e2e_s < end_s]
    return len(done) / (end_s - start_s)


def summary(results: Sequence[Result]) -> dict[str, float | int | None]:
    ok = [r for r in results if r.ok]
    ttft = [r.ttft_s for r in ok if r.ttft_s is not None]
    tpot = [r.tpot_s for r in ok if r.tpot_s is not None]
    return {
        "requests": len(results),
        "failed": len(results) - len(ok),
        "ttft_p50_s": float(np.percentile(ttft, 50)) if ttft else None,
        "ttft_p95_s": p95(ttft),
        "tpot_p50_s": float(np.percentile(tpot, 50)) if tpot else None,
        "tpot_p95_s": p95(tpot),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--target", action="append", required=True, help="ip:port of a worker (repeatable)")
    parser.add_argument("--profile", default="poisson:2:10", help=parse_profile.__doc__)
    parser.add_argument("--max-prompt", type=int, default=512)
    parser.add_argument("--max-output", type=int, default=64)
    parser.add_argument("--max-requests", type=int, default=5000)
    parser.add_argument("--deadline-s", type=float, default=600.0)
    parser.add_argument("--json", type=Path, help="write every request's result here")
    args = parser.parse_args()
    arrivals = parse_profile(args.profile, args.max_prompt, args.max_output)
    targets = [local(t) for t in args.target]
    run = asyncio.run(
        replay(arrivals, lambda: targets, max_requests=args.max_requests, deadline_s=args.deadline_s)
    )
    print(json.dumps(summary(run.results), indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps([asdict(r) for r in run.results]))


if __name__ == "__main__":
    main()
