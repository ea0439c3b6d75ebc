"""One startup handler, driven by OperatorConfig: Kopf's settings are applied by it, not by import order."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import kopf
import pytest
from kopf._core.intents.causes import Activity

from goodput.controllers import kopf_settings
from goodput.controllers.config import OperatorConfig

MAIN = Path(__file__).resolve().parents[2] / "operator" / "main.py"


def test_the_operator_registers_one_startup_handler() -> None:
    spec = importlib.util.spec_from_file_location("goodput_operator_main", MAIN)
    assert spec is not None and spec.loader is not None
    spec.loader.exec_module(
        importlib.util.module_from_spec(spec)
    )  # registers the handlers, as `kopf run` does
    startup = kopf.get_default_registry()._activities.get_handlers(activity=Activity.STARTUP)
    assert [handler.id for handler in startup] == ["start"]


def test_kopf_settings_make_one_standalone_replica_with_annotations() -> None:
    settings = kopf.OperatorSettings()
    kopf_settings.apply(settings)
    assert settings.peering.standalone and settings.scanning.disabled
    assert settings.persistence.finalizer == "goodput.dev/finalizer"


def test_namespaces_and_liveness_come_from_the_config() -> None:
    config = OperatorConfig.from_env(
        {
            "GOODPUT_OPERATOR_NAMESPACES": " team-a, team-b ,",
            "GOODPUT_OPERATOR_LIVENESS": "http://10.0.0.1:8080/healthz",
        }
    )
    assert config.namespaces == ("team-a", "team-b")
    assert config.liveness_endpoint == "http://10.0.0.1:8080/healthz"
    assert OperatorConfig.from_env({}).namespaces == ()


def test_a_bad_setting_names_its_variable() -> None:
    with pytest.raises(ValueError, match="GOODPUT_OPERATOR_POLL_INTERVAL_S"):
        OperatorConfig.from_env({"GOODPUT_OPERATOR_POLL_INTERVAL_S": "0"})


def test_the_window_covers_the_poll_interval() -> None:
    assert OperatorConfig.from_env({}).window_s == OperatorConfig.from_env({}).poll_interval_s == 15
    with pytest.raises(ValueError, match=r"GOODPUT_OPERATOR_WINDOW_S .* GOODPUT_OPERATOR_POLL_INTERVAL_S"):
        OperatorConfig.from_env({"GOODPUT_OPERATOR_POLL_INTERVAL_S": "30", "GOODPUT_OPERATOR_WINDOW_S": "15"})
