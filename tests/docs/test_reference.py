"""docs/reference.md: current with the models, every field documented, every link landing on a heading."""

from __future__ import annotations

import re

from pydantic import BaseModel

from goodput.crds import reference


def fields(model: type[BaseModel], seen: set[type] | None = None) -> set[str]:
    seen = seen if seen is not None else set()
    seen.add(model)
    names = set()
    for name, field in model.model_fields.items():
        names.add(field.alias or name)
        child = reference.nested_model(field.annotation)
        if child is not None and child not in seen:
            names |= fields(child, seen)
    return names


def test_reference_is_current() -> None:
    assert reference.OUTPUT.exists(), "docs/reference.md missing: run `python -m goodput.crds.reference`"
    assert reference.OUTPUT.read_text() == reference.render(), (
        "docs/reference.md is stale: run `python -m goodput.crds.reference`"
    )


def test_every_field_has_a_row() -> None:
    page = reference.render()
    rows = set(re.findall(r"^\| `([^`]+)` \|", page, re.MULTILINE))
    for kind in reference.KINDS:
        missing = (fields(kind.spec) | fields(kind.status)) - rows
        assert not missing, f"{kind.name}: {sorted(missing)}"


def test_every_cross_field_rule_is_listed() -> None:
    page = reference.render()
    for kind in reference.KINDS:
        for model in [kind.spec, kind.status]:
            stack, seen = [model], set()
            while stack:
                current = stack.pop()
                seen.add(current)
                for rule in getattr(current, "cel_rules", ()):
                    assert f"`{rule.rule}`" in page
                for field in current.model_fields.values():
                    child = reference.nested_model(field.annotation)
                    if child is not None and child not in seen:
                        stack.append(child)


def test_links_land_on_headings() -> None:
    page = reference.render()
    anchors = {reference.anchor(h) for h in re.findall(r"^#+ (.+)$", page, re.MULTILINE)}
    for target in re.findall(r"\]\(#([^)]+)\)", page):
        assert target in anchors, target
