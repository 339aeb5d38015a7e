"""The hand-written checks on a plugin's start-up path accept exactly what the regular
expressions they replace accepted (a plugin process compiles no pattern for them)."""

from __future__ import annotations

import re

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from pycni.invoke._trace import _may_hold_secrets
from pycni.plugins.main._common import _is_mac, parse_mac
from pycni.skel import CONTAINER_ID_RE, validate_container_id
from pycni.spec import NAME_RE, InvalidEnvironmentVariables, InvalidNetworkConfig, is_valid_name

_NAME = re.compile(r"^[a-zA-Z0-9][a-zA-Z0-9_.\-]*\Z")
_MAC = re.compile(r"([0-9a-fA-F]{2}[:-]){5}[0-9a-fA-F]{2}")
_HINT = re.compile(rb"token|passw|secret|key|authorization|credential|cookie|bearer|\\u", re.I)

# ASCII and its look-alikes: Unicode digits and letters (which \w, str.isalnum and
# str.isdigit take), fullwidth forms, the Kelvin sign (which IGNORECASE folds to "k"),
# newlines and NUL.
_CHARS = ("azAZ09_.-:/ \n\r\t\x00" "\u0660\u0967\uff10\uff21\u00e9\u00df\u0131\u212a"
          "\u017f\u0391")
_NAMES = st.text(alphabet=_CHARS, max_size=12)


@settings(max_examples=2000)
@given(_NAMES)
@example("a")
@example("a\n")
@example("\u0661")
@example("a\u0661")
@example("")
@example("-a")
@example("a-._")
def test_is_valid_name_is_the_name_pattern(text: str) -> None:
    assert is_valid_name(text) == bool(_NAME.match(text))


def test_the_public_patterns_are_still_the_name_rule() -> None:
    assert NAME_RE.pattern == _NAME.pattern
    assert CONTAINER_ID_RE.pattern == _NAME.pattern


@settings(max_examples=300)
@given(_NAMES.filter(bool))
def test_container_ids_follow_the_name_pattern(cid: str) -> None:
    if _NAME.match(cid):
        validate_container_id(cid)
    else:
        with pytest.raises(InvalidEnvironmentVariables):
            validate_container_id(cid)


_MAC_PARTS = st.lists(st.sampled_from(["0", "9", "a", "F", "g", ":", "-", "\n", "\u0661",
                                       "\uff10", " ", "aa", "0F:", "e-"]), max_size=20)


@settings(max_examples=3000)
@given(_MAC_PARTS.map("".join))
@example("aa:bb:cc:dd:ee:ff")
@example("aa:bb:cc:dd:ee:ff\n")
@example("aa:bb:cc:dd:ee:ff\n\n")
@example("AA-bb:CC-dd:EE-ff")
@example("aa:bb:cc:dd:ee:f\u0661")
@example("aa:bb:cc:dd:ee:ff:")
@example("\naa:bb:cc:dd:ee:ff")
def test_is_mac_is_the_mac_pattern(text: str) -> None:
    # fullmatch: a final newline, which ``$`` lets through, is no MAC (it was taken as one:
    # bytes.fromhex skips whitespace, so the kernel got a valid address).
    assert _is_mac(text) == bool(_MAC.fullmatch(text))


_HINT_PARTS = st.lists(st.sampled_from([b"tok", b"en", b"TOKEN", b"Passw", b"secre", b"t",
                                        b"KEY", b"ke", b"y", b"authorization", b"credenTial",
                                        b"cooKie", b"bearer", b"\\", b"u", b"U", b"\xe2\x84\xaa",
                                        b"x", b"\xff"]), max_size=10)


@settings(max_examples=2000)
@given(_HINT_PARTS.map(b"".join))
@example(b"")
@example(b'{"\\u0074oken": 1}')
@example(b"\\U0074")
@example(b"\xe2\x84\xaaey")  # the Kelvin sign: no ASCII folding for bytes
def test_may_hold_secrets_is_the_hint_pattern(data: bytes) -> None:
    assert _may_hold_secrets(data) == bool(_HINT.search(data))


def test_a_mac_with_a_final_newline_is_refused_as_go_refuses_it() -> None:
    with pytest.raises(InvalidNetworkConfig, match="invalid MAC address"):
        parse_mac("aa:bb:cc:dd:ee:ff\n", '"mac"')
    assert parse_mac("AA-bb:cc:dd:ee:FF", '"mac"') == "aa:bb:cc:dd:ee:ff"
