"""pycni._pathstr spells a path exactly as pathlib does (the string names files and keys
host-local's index; it appears in messages)."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pycni._pathstr import join_path

_EDGES = [
    ("",), (".",), ("/",), ("//",), ("///",), ("////a",), ("//a//b/",), ("a/./b/../c",),
    ("/var/lib/cni/networks", "net1"), ("/var/lib/", "net1"), ("/var//lib/./", "./net1/"),
    ("relative", "net"), ("", "net"), ("/a", "/b"), ("/a", "//b"), ("a", "", "b"),
    ("/run/netns", ""), ("/run/netns", "."), ("/run/netns", ".."), ("/run/netns", "a/b"),
    ("..",), ("a", "..", "."), ("/a\x00b", "c"), ("/ä", "ü/β"),
]


@pytest.mark.parametrize("parts", _EDGES)
def test_join_path_is_pathlibs_spelling(parts: tuple[str, ...]) -> None:
    assert join_path(*parts) == str(PurePosixPath(*parts))


@settings(max_examples=500)
@given(st.lists(st.text(alphabet="/.ab\x00é", max_size=8), min_size=1, max_size=4))
def test_join_path_matches_pathlib_on_generated_parts(parts: list[str]) -> None:
    assert join_path(*parts) == str(PurePosixPath(*parts))
