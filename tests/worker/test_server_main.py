"""`python -m goodput.worker_image` validates its settings before loading anything: exit 2, stderr names the value."""

from pathlib import Path

import pytest

from goodput.worker_image.__main__ import main


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        (["--model", "random:tiny", "--port", "http"], {}, "port='http'"),
        (["--model", "random:tiny", "--port", "70000"], {}, "port=70000"),
        (["--model", "random:tiny"], {"GOODPUT_DRAIN_TIMEOUT_S": "-1"}, "drain_timeout_s=-1"),
        (["--model", "random:tiny", "--max-num-seqs", "0"], {}, "max_num_seqs=0"),
        (["--model", "random:tiny"], {"GOODPUT_DTYPE": "int3"}, "dtype='int3'"),
        (
            ["--model", "random:tiny", "--api-key-file", "/nonexistent/key"],
            {},
            "api_key_file='/nonexistent/key'",
        ),
        (["--model", "random:tiny"], {"GOODPUT_API_KEY": " "}, "GOODPUT_API_KEY"),
        ([], {}, "model is required"),
        (["--model", "random:huge"], {}, "model='random:huge'"),
        (["--model", "/nonexistent/model"], {}, "model='/nonexistent/model'"),
    ],
)
def test_bad_settings_exit_2_naming_the_value(
    argv: list[str], env: dict[str, str], named: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(argv, env) == 2
    assert named in capsys.readouterr().err


def test_unknown_flag_exits_2(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--model", "random:tiny", "--max-num-seq", "4"], {})
    assert exited.value.code == 2
    assert "--max-num-seq" in capsys.readouterr().err


def test_empty_api_key_file_is_rejected(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    key = tmp_path / "key"
    key.write_text("\n")
    assert main(["--model", "random:tiny", "--api-key-file", str(key)], {}) == 2
    assert "the file is empty" in capsys.readouterr().err


def test_flags_win_over_environment_and_key_file_is_read(tmp_path: Path) -> None:
    from goodput.worker_image.__main__ import build_parser, parse_options

    key = tmp_path / "key"
    key.write_text("k3y\n")
    env = {"GOODPUT_PORT": "9000", "GOODPUT_HOST": "127.0.0.1", "GOODPUT_DRAIN_TIMEOUT_S": "5"}
    flags = build_parser().parse_args(["--model", "m", "--port", "9100", "--api-key-file", str(key)])
    options = parse_options(flags, env)
    assert (options.host, options.port, options.drain_timeout_s, options.api_key) == (
        "127.0.0.1",
        9100,
        5.0,
        "k3y",
    )
    assert parse_options(build_parser().parse_args([]), {"GOODPUT_API_KEY": "env-key"}).api_key == "env-key"
