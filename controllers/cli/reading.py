"""Where `goodput status` and `explain` read from (flags), and the Prometheus refresh those flags turn on."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from typing import Any

from pydantic import ValidationError

from goodput.controllers.cli.flags import positive_int
from goodput.controllers.oncall import PROMETHEUS_ENV, Fresh, ServiceKey, prometheus_url, refresh
from goodput.crds.inferenceservice import InferenceServiceSpec
from goodput.crds.slopolicy import SLOPolicySpec


def cluster_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--kubeconfig", help="kubeconfig file (default: $KUBECONFIG, ~/.kube/config, in-cluster)"
    )
    parser.add_argument("--context", help="kubeconfig context")
    parser.add_argument(
        "--prometheus", help=f"refresh observed p95s from this Prometheus (default: ${PROMETHEUS_ENV})"
    )
    parser.add_argument(
        "--window", type=positive_int, default=60, help="Prometheus window in seconds (default 60)"
    )


def key_of(obj: dict[str, Any]) -> ServiceKey:
    return obj["metadata"]["namespace"], obj["metadata"]["name"]


def refreshed(
    args: argparse.Namespace,
    objects: Iterable[dict[str, Any]],
    policy_of: Callable[[str | None], SLOPolicySpec],
) -> tuple[dict[ServiceKey, Fresh] | None, str]:
    """Fresh observations when a Prometheus is given, with the note to show when they cannot be had.

    None (and no note) without a Prometheus; None with "Prometheus unreachable" (and a warning) when it fails.
    A service whose spec does not validate is not refreshed: the operator takes no observation of it either.
    """
    url = prometheus_url(args.prometheus)
    if url is None:
        return None, ""
    services: dict[ServiceKey, tuple[InferenceServiceSpec, SLOPolicySpec]] = {}
    for obj in objects:
        try:
            spec = InferenceServiceSpec.model_validate(obj.get("spec") or {})
        except ValidationError:
            continue
        services[key_of(obj)] = (spec, policy_of(spec.policy_ref))
    if not services:
        return None, ""
    fresh, error = refresh(url, args.window, services)
    if error:
        print(f"warning: {error}; showing the observations recorded in status", file=sys.stderr)
        return None, "Prometheus unreachable"
    return fresh, ""
