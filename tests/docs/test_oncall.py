"""docs/oncall.md keeps up with what it explains: conditions, alerts, runbook links and SLOPolicy fields."""

from __future__ import annotations

import re
import typing
from pathlib import Path

from goodput.crds.common import ConditionType
from goodput.crds.reference import anchor
from goodput.crds.slopolicy import SLOPolicySpec
from observability.rules import rule_groups

ROOT = Path(__file__).resolve().parents[2]
PAGE = ROOT / "docs" / "oncall.md"


def test_every_condition_has_a_section() -> None:
    headings = re.findall(r"^### (\w+)$", PAGE.read_text(), re.MULTILINE)
    assert set(typing.get_args(ConditionType)) <= set(headings)


def test_every_alert_is_explained_and_its_runbook_link_lands() -> None:
    page = PAGE.read_text()
    anchors = {anchor(h) for h in re.findall(r"^#+ (.+)$", page, re.MULTILINE)}
    for group in rule_groups():
        for rule in group["rules"]:
            if "alert" not in rule:
                continue
            assert f"`{rule['alert']}`" in page, rule["alert"]
            link = rule["annotations"]["runbook_url"]
            assert link.split("#")[0].endswith("docs/oncall.md")
            assert link.split("#")[1] in anchors, link


def test_every_policy_field_has_tuning_advice() -> None:
    page = PAGE.read_text()
    for name, field in SLOPolicySpec.model_fields.items():
        assert f"- **`{field.alias or name}`**" in page, name
