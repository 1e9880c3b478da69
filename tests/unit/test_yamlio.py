"""The strict YAML loader: plain data only, bounded, every problem one line with its position."""

from __future__ import annotations

import pytest

from etcdforge.errors import SpecError
from etcdforge.yamlio import load_yaml


@pytest.mark.parametrize(
    "text",
    ["a: !!binary aGVsbG8=", "a: !!set {x, y}", "a: !!timestamp 2001-12-14", "a: !!str 1", "a: !foo x",
     "a: !!python/object:os.system x", "? [a]\n: 1", "? {a: 1}\n: 1",
     "a: &x [1]\nb: [" + ",".join(["*x"] * 100) + "]"],
)  # fmt: skip
def test_tags_complex_keys_and_alias_bombs_are_one_line_errors(text: str) -> None:
    with pytest.raises(SpecError) as info:
        load_yaml(text, source="cluster.yaml")
    assert str(info.value).startswith("cluster.yaml:")
    assert "\n" not in str(info.value)


def test_an_oversized_document_is_refused_before_parsing() -> None:
    with pytest.raises(SpecError, match="larger than"):
        load_yaml("a: " + "x" * (2 << 20), source="cluster.yaml")


def test_a_few_aliases_still_work() -> None:
    assert load_yaml("a: &x [1]\nb: *x\n", source="t") == {"a": [1], "b": [1]}
