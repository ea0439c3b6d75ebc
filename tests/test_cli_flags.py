"""Numeric options out of range are refused by the parser, naming the option; no verb runs on them."""

import argparse
from pathlib import Path

import pytest

from goodput.controllers.cli import EXIT_INVALID, build_parser, main
from goodput.controllers.cli.flags import (
    non_negative_float,
    non_negative_int,
    positive_float,
    positive_int,
    share,
)

ROOT = Path(__file__).resolve().parents[1]
CHAT = str(ROOT / "manifests" / "examples" / "chat-llama3-8b.yaml")
CODE = str(ROOT / "data" / "azure_llm_2023_code.csv")


@pytest.mark.parametrize(
    ("parse", "good", "bad"),
    [
        (positive_float, [("0.5", 0.5), ("1e3", 1000.0)], ["0", "-1", "nan", "inf", "x"]),
        (non_negative_float, [("0", 0.0), ("2.5", 2.5)], ["-0.1", "nan", "-inf", ""]),
        (share, [("0", 0.0), ("0.99", 0.99)], ["1", "1.5", "-0.1", "nan"]),
        (positive_int, [("1", 1), ("64", 64)], ["0", "-3", "1.5", "two"]),
        (non_negative_int, [("0", 0), ("7", 7)], ["-1", "0.5"]),
    ],
)
def test_flag_types(parse, good, bad) -> None:
    for text, value in good:
        assert parse(text) == value and type(parse(text)) is type(value)
    for text in bad:
        with pytest.raises(argparse.ArgumentTypeError, match=f"got {text!r}"):
            parse(text)


@pytest.mark.parametrize(
    ("argv", "option"),
    [
        (["simulate", "--trace", CODE, "--headroom", "1.5"], "--headroom"),
        (["simulate", "--trace", CODE, "--workers", "0"], "--workers"),
        (["simulate", "--trace", CODE, "--start-delay", "-5"], "--start-delay"),
        (["simulate", "--trace", CODE, "--seed", "-1"], "--seed"),
        (["simulate", "--trace", CODE, "--ttft-ms", "0"], "--ttft-ms"),
        (["simulate", "--trace", CODE, "--tpot-ms", "-3"], "--tpot-ms"),
        (["simulate", "--trace", CODE, "--scale", "inf"], "--scale"),
        (["simulate", "--trace", CODE, "--window", "0"], "--window"),
        (["plan", "-f", CHAT, "--rps", "-5"], "--rps"),
        (["plan", "-f", CHAT, "--ttft-factor", "0"], "--ttft-factor"),
        (["plan", "-f", CHAT, "--tpot-factor", "-1"], "--tpot-factor"),
        (["plan", "-f", CHAT, "--alternatives", "-2"], "--alternatives"),
        (["plan", "-f", CHAT, "--trace", CODE, "--peak-window", "0"], "--peak-window"),
        (["explain", "svc", "--rps", "-1"], "--rps"),
        (["status", "--window", "0"], "--window"),
    ],
)
def test_out_of_range_options_are_refused_by_name(argv, option, capsys) -> None:
    with pytest.raises(SystemExit) as exit_:
        build_parser().parse_args(argv)
    assert exit_.value.code == 2
    assert f"argument {option}: expected" in capsys.readouterr().err


def test_plan_refuses_a_peak_window_without_a_trace(capsys) -> None:
    assert main(["plan", "-f", CHAT, "--peak-window", "60"]) == EXIT_INVALID
    assert "--peak-window: applies to a --trace only" in capsys.readouterr().err


@pytest.mark.parametrize("content", [None, "a,b\n1,2\n"])
def test_plan_names_an_unreadable_trace(content, tmp_path, capsys) -> None:
    path = tmp_path / "trace.csv"
    if content is not None:
        path.write_text(content)
    assert main(["plan", "-f", CHAT, "--trace", str(path)]) == EXIT_INVALID
    err = capsys.readouterr().err
    assert "error: --trace:" in err and str(path) in err


def test_simulate_needs_a_policy() -> None:
    with pytest.raises(SystemExit, match="--policies: name at least one of goodput"):
        main(["simulate", "--trace", "synthetic:diurnal", "--policies", " , "])
