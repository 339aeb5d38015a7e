"""iptables-save lines split exactly as shlex.split does (the fast path must not differ)."""

from __future__ import annotations

import shlex

import pytest
from hypothesis import given
from hypothesis import strategies as st

from pycni.host.netfilter._xtables import NatTable, split_rule


def _shlex(line: str) -> list[str] | str:
    try:
        return shlex.split(line)
    except ValueError:
        return "ValueError"


def _ours(line: str) -> list[str] | str:
    try:
        return split_rule(line)
    except ValueError:
        return "ValueError"


@pytest.mark.parametrize("line", [
    '-A POSTROUTING -s 10.1.0.2/32 -m comment --comment "name: \\"net\\" id: \\"c1\\"" -j CNI-x',
    '-A X -m comment --comment "a\\\\b\\"c\\nd" -j Y',
    '-A X ""',
    '-A X "a b"c"d e"',
    "-A X 'single quoted' -j Y",
    "-A X a\\ b",
    '-A X "unbalanced',
    "-A X \x0cform\x0bfeed\u00a0nbsp",
    "",
])
def test_known_lines(line: str) -> None:
    assert _ours(line) == _shlex(line)


@given(st.text(alphabet=list("ab -#\"'\\\t\n\r\x0c\x0b\u00a0é"), max_size=24))
def test_any_line(line: str) -> None:
    assert _ours(line) == _shlex(line)


def test_nat_table_reads_quoted_comments() -> None:
    comment = '"name: \\"n\\" id: \\"c\\""'
    table = NatTable.parse(f"*nat\n:CNI-x - [0:0]\n"
                           f"-A CNI-x -d 10.1.0.0/24 -m comment --comment {comment} -j ACCEPT\n"
                           f"COMMIT\n")
    assert table.rules["CNI-x"] == [
        ["-d", "10.1.0.0/24", "-m", "comment", "--comment", 'name: "n" id: "c"', "-j", "ACCEPT"]]
