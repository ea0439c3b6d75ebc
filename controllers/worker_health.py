"""Why a service's workers do not come up, in the containers' own words, for the Ready condition and an Event.

"0/1 ready" says nothing an on-call engineer can act on; the pods do: a container waiting in CrashLoopBackOff
or ImagePullBackOff, its last exit (OOMKilled, or Error with the worker's last log lines when the kubelet
keeps them: terminationMessagePolicy FallbackToLogsOnError), a pod the scheduler cannot place. Pure: pods in,
one problem out. Replicas of a tier usually fail alike, so equal problems are told once, with their count.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from typing import Any

STARTING = frozenset({"ContainerCreating", "PodInitializing"})  # waiting reasons that are just progress
MESSAGE_CHARS = 300  # of each container message: a log tail can be long; a condition message should not be
SHOWN = 2  # distinct problems spelled out; the rest are counted
RAISED = re.compile(
    r"^[\w.]*(Error|Exception|Exit|Interrupt)\b.*"
)  # a traceback's last line: "RuntimeError: …"


@dataclass(frozen=True)
class WorkerProblem:
    reason: str  # the container's own reason (CrashLoopBackOff, OOMKilled, Unschedulable, …)
    message: str  # every distinct problem, with the pods that have it


def _clip(text: str) -> str:
    text = " ".join(text.split())
    return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"


def _last_words(log_tail: str) -> str:
    """What a log tail says went wrong: the last exception raised, else its end (shutdown chatter follows a
    traceback, so neither its first nor its last line is the point)."""
    lines = [line.strip() for line in log_tail.splitlines() if line.strip()]
    raised = [line for line in lines if RAISED.match(line)]
    if raised:
        return _clip(raised[-1])
    text = " ".join(" ".join(lines).split())
    return text if len(text) <= MESSAGE_CHARS else "…" + text[-(MESSAGE_CHARS - 1) :]


def _container_problem(status: dict[str, Any]) -> tuple[str, str] | None:
    """(reason, description) of one container status, or None when it is running or just starting."""
    name = status.get("name", "?")
    waiting = (status.get("state") or {}).get("waiting") or {}
    last = (status.get("lastState") or {}).get("terminated") or {}
    parts, reason = [], ""
    if waiting.get("reason") and waiting["reason"] not in STARTING:
        reason = waiting["reason"]
        parts.append(reason + (f" ({_clip(waiting['message'])})" if waiting.get("message") else ""))
    if last and last.get("reason") != "Completed":
        reason = reason or last.get("reason") or "Terminated"
        exit_text = f"last exit {last.get('reason') or 'Terminated'} (exit code {last.get('exitCode', '?')})"
        parts.append(exit_text + (f": {_last_words(last['message'])}" if last.get("message") else ""))
    if not parts:
        return None
    return reason, f"container {name}: " + "; ".join(parts)


def _pod_problems(pod: dict[str, Any]) -> list[tuple[str, str]]:
    status = pod.get("status") or {}
    found = []
    for condition in status.get("conditions") or []:
        if condition.get("type") == "PodScheduled" and condition.get("status") == "False":
            reason = condition.get("reason") or "Unschedulable"
            found.append((reason, f"{reason}: {_clip(condition.get('message', ''))}"))
    for key in ("initContainerStatuses", "containerStatuses"):
        for container in status.get(key) or []:
            problem = _container_problem(container)
            if problem is not None:
                found.append(problem)
    return found


def worker_problem(pods: list[dict[str, Any]]) -> WorkerProblem | None:
    """The problems of a service's pods (terminating ones left out), most common first; None when none."""
    counts: Counter[tuple[str, str]] = Counter()
    for pod in pods:
        if (pod.get("metadata") or {}).get("deletionTimestamp"):
            continue
        counts.update(set(_pod_problems(pod)))
    if not counts:
        return None
    ranked = counts.most_common()
    shown = [f"{text} ({n} pod{'s' if n > 1 else ''})" for (_, text), n in ranked[:SHOWN]]
    more = len(ranked) - SHOWN
    if more > 0:
        shown.append(f"and {more} other problem{'s' if more > 1 else ''}")
    return WorkerProblem(reason=ranked[0][0][0], message="; ".join(shown))
