"""`python -m goodput.worker_image` (and `goodput serve`): parse flags and GOODPUT_* variables, validate, serve.

Server flags sit beside the engine's; environment variables set both, flags win. A bad value exits 2 with a
message on stderr that names it, before any model is loaded.
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from goodput.worker_image.config import ENV_PREFIX, EngineConfig
from goodput.worker_image.presets import PRESETS
from goodput.worker_image.server import ServeOptions, serve


class UsageError(ValueError):
    """A bad flag or environment value; exit code 2."""


def _default(f: dataclasses.Field) -> str:
    if f.default is dataclasses.MISSING:
        return "required"
    if f.default is None:
        return "default: unset"
    return f"default: {f.default}"


def build_parser(prog: str = "python -m goodput.worker_image") -> argparse.ArgumentParser:
    """The worker's flags with their help (also shown by `goodput serve --help`)."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Serve a model over an OpenAI-compatible API. Every flag can also be set as "
        f"{ENV_PREFIX}<FLAG> (e.g. {ENV_PREFIX}PORT); flags win.",
        epilog=f"model presets (--model random:<preset>, seeded random weights): {', '.join(PRESETS)}",
        allow_abbrev=False,
    )
    server = parser.add_argument_group("server")
    server.add_argument("--host", help="address to bind (default 0.0.0.0)")
    server.add_argument("--port", help="port to bind (default 8000)")
    server.add_argument("--api-key-file", help=f"file holding the API key (or {ENV_PREFIX}API_KEY itself)")
    server.add_argument(
        "--drain-timeout-s", help="seconds to finish in-flight requests after SIGTERM (default 30)"
    )
    server.add_argument("--served-model-name", help="model name in the API and metrics (default: --model)")
    engine = parser.add_argument_group("engine")
    for f in dataclasses.fields(EngineConfig):
        help_text = f"{f.metadata['help']} ({_default(f)})"
        if f.name == "model":
            help_text += f"; presets: {', '.join(PRESETS)}"
        engine.add_argument("--" + f.name.replace("_", "-"), help=help_text)
    return parser


def _setting(flags: argparse.Namespace, env: Mapping[str, str], name: str) -> str | None:
    flag = getattr(flags, name)
    return flag if flag is not None else env.get(ENV_PREFIX + name.upper())


def parse_options(flags: argparse.Namespace, env: Mapping[str, str]) -> ServeOptions:
    """The server's options, validated; UsageError names the bad value."""
    host = _setting(flags, env, "host") or "0.0.0.0"
    port_text = _setting(flags, env, "port") or "8000"
    try:
        port = int(port_text)
    except ValueError:
        raise UsageError(f"invalid server option: port={port_text!r}: expected an integer") from None
    if not 0 <= port <= 65535:
        raise UsageError(f"invalid server option: port={port}: must be in [0, 65535]")
    drain_text = _setting(flags, env, "drain_timeout_s") or "30"
    try:
        drain_timeout_s = float(drain_text)
    except ValueError:
        raise UsageError(f"invalid server option: drain_timeout_s={drain_text!r}: expected seconds") from None
    if not 0 <= drain_timeout_s < float("inf"):
        raise UsageError(f"invalid server option: drain_timeout_s={drain_timeout_s}: must be >= 0 and finite")
    return ServeOptions(
        host=host,
        port=port,
        api_key=_api_key(flags, env),
        drain_timeout_s=drain_timeout_s,
        served_model_name=_setting(flags, env, "served_model_name"),
    )


def _api_key(flags: argparse.Namespace, env: Mapping[str, str]) -> str | None:
    path = _setting(flags, env, "api_key_file")
    if path is None:
        key = env.get(ENV_PREFIX + "API_KEY")
        if key is not None and not key.strip():
            raise UsageError(f"invalid server option: {ENV_PREFIX}API_KEY is set but empty")
        return key.strip() if key else None
    try:
        key = Path(path).read_text().strip()
    except OSError as exc:
        raise UsageError(f"invalid server option: api_key_file={path!r}: {exc.strerror}") from None
    if not key:
        raise UsageError(f"invalid server option: api_key_file={path!r}: the file is empty")
    return key


def check_model_source(model: str) -> None:
    """Fail before the server starts, not in the background loader, when the model cannot exist."""
    if model.startswith("random:"):
        preset = model.removeprefix("random:")
        if preset not in PRESETS:
            raise UsageError(
                f"invalid engine config: model={model!r}: known presets are {', '.join(PRESETS)}"
            )
    elif not (Path(model) / "config.json").is_file():
        raise UsageError(f"invalid engine config: model={model!r}: not a folder with config.json")


def main(argv: list[str] | None = None, env: Mapping[str, str] | None = None) -> int:
    """Run the worker; returns the exit code (0 after a graceful drain, 2 for a bad setting)."""
    argv = sys.argv[1:] if argv is None else argv
    env = os.environ if env is None else env
    flags = build_parser().parse_args(argv)  # unknown flags exit 2 with argparse's message
    try:
        options = parse_options(flags, env)
        config = EngineConfig.from_env_and_args(argv, env)
        check_model_source(config.model)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return serve(config, options)


if __name__ == "__main__":
    sys.exit(main())
