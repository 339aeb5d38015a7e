"""The CNI error model: one code enum and one exception tree.

Every failure a plugin or the runtime reports is a :class:`CNIError`; it renders as the
spec's error JSON ``{"cniVersion", "code", "msg", "details"}``::

    CNIError (code from the instance)
    ├── IncompatibleCNIVersion        1
    ├── UnsupportedField              2
    ├── UnknownContainer              3
    ├── InvalidEnvironmentVariables   4
    ├── IOFailure                     5
    ├── DecodingFailure               6
    ├── InvalidNetworkConfig          7
    ├── TryAgainLater                11
    ├── PluginNotAvailable           50
    ├── LimitedConnectivity          51
    ├── KernelError                 100  (a netlink/sysctl/netfilter operation failed)
    ├── AddressExhausted            101  (IPAM has no free address in a range)
    ├── AddressInUse                102  (a requested address is taken)
    ├── PluginNotFound              103  (runtime: no executable for a type in CNI_PATH)
    ├── PluginExecFailed            104  (runtime: the executable crashed, hung or spoke garbage)
    └── InternalError               999  (a bug: an exception nobody translated)

``from_json`` turns an error JSON read from a plugin back into the matching class.
"""

# The classes carry the spec's names for the well-known errors, not an "...Error" suffix.
# ruff: noqa: N818

from __future__ import annotations

import enum

TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, ClassVar


class ErrorCode(enum.IntEnum):
    """Error codes: 1-99 are the spec's well-known codes, 100+ are pycni's own."""

    INCOMPATIBLE_CNI_VERSION = 1
    UNSUPPORTED_FIELD = 2
    UNKNOWN_CONTAINER = 3
    INVALID_ENVIRONMENT_VARIABLES = 4
    IO_FAILURE = 5
    DECODING_FAILURE = 6
    INVALID_NETWORK_CONFIG = 7
    TRY_AGAIN_LATER = 11
    PLUGIN_NOT_AVAILABLE = 50
    LIMITED_CONNECTIVITY = 51
    KERNEL_ERROR = 100
    ADDRESS_EXHAUSTED = 101
    ADDRESS_IN_USE = 102
    PLUGIN_NOT_FOUND = 103
    PLUGIN_EXEC_FAILED = 104
    INTERNAL = 999


#: Longest ``msg``/``details`` written out. Messages quote what they were given, and some of
#: it has no limit (a 100 KB container ID, a config value): the middle of a longer text is cut.
TEXT_MAX = 4096


def _clip(text: str) -> str:
    """``text``, or its head and tail with a marker saying how much of the middle was cut."""
    if len(text) <= TEXT_MAX:
        return text
    keep = TEXT_MAX // 2
    return f"{text[:keep]}...[{len(text) - 2 * keep} characters cut]...{text[-keep:]}"


class CNIError(Exception):
    """A CNI error: a code, a one-line message and optional details."""

    default_code: ClassVar[int] = ErrorCode.INTERNAL

    def __init__(self, msg: str, details: str = "", *, code: int | None = None) -> None:
        super().__init__(msg)
        self.msg = msg
        self.details = details
        self.code = int(code if code is not None else self.default_code)

    def __str__(self) -> str:
        return f"{self.msg}: {self.details}" if self.details else self.msg

    def __repr__(self) -> str:
        name = type(self).__name__
        return f"{name}(code={self.code}, msg={self.msg!r}, details={self.details!r})"

    def to_json(self, cni_version: str) -> dict[str, Any]:
        """The spec's error object; ``details`` is omitted when empty, as libcni does."""
        out: dict[str, Any] = {"cniVersion": cni_version, "code": self.code,
                               "msg": _clip(self.msg)}
        if self.details:
            out["details"] = _clip(self.details)
        return out

    @staticmethod
    def from_json(obj: Any) -> CNIError:
        """Rebuild an error a plugin printed; an unknown code keeps its number."""
        if not isinstance(obj, dict) or not isinstance(obj.get("code"), int):
            raise DecodingFailure("plugin error output is not a CNI error object", repr(obj)[:200])
        code = obj["code"]
        cls = _BY_CODE.get(code, CNIError)
        return cls(str(obj.get("msg", "")), str(obj.get("details", "")), code=code)


class IncompatibleCNIVersion(CNIError):
    """The config's cniVersion is not one the plugin or runtime supports."""

    default_code = ErrorCode.INCOMPATIBLE_CNI_VERSION


class UnsupportedField(CNIError):
    """A field is valid JSON but not supported (e.g. an unknown CNI_ARGS key)."""

    default_code = ErrorCode.UNSUPPORTED_FIELD


class UnknownContainer(CNIError):
    """The container (netns, interface) named by the call does not exist."""

    default_code = ErrorCode.UNKNOWN_CONTAINER


class InvalidEnvironmentVariables(CNIError):
    """A CNI_* variable is missing or malformed."""

    default_code = ErrorCode.INVALID_ENVIRONMENT_VARIABLES


class IOFailure(CNIError):
    """Reading or writing a file, socket or pipe failed."""

    default_code = ErrorCode.IO_FAILURE


class DecodingFailure(CNIError):
    """The input is not valid JSON, or not of the expected shape."""

    default_code = ErrorCode.DECODING_FAILURE


class InvalidNetworkConfig(CNIError):
    """The network configuration is invalid; the message names the field."""

    default_code = ErrorCode.INVALID_NETWORK_CONFIG


class TryAgainLater(CNIError):
    """A transient condition: the runtime should retry the same call."""

    default_code = ErrorCode.TRY_AGAIN_LATER


class PluginNotAvailable(CNIError):
    """STATUS: the plugin cannot service ADD requests now."""

    default_code = ErrorCode.PLUGIN_NOT_AVAILABLE


class LimitedConnectivity(CNIError):
    """STATUS: ADDs work but the network has limited connectivity."""

    default_code = ErrorCode.LIMITED_CONNECTIVITY


class KernelError(CNIError):
    """A kernel operation (netlink, sysctl, netfilter) failed; the message names the object."""

    default_code = ErrorCode.KERNEL_ERROR


class AddressExhausted(CNIError):
    """IPAM found no free address."""

    default_code = ErrorCode.ADDRESS_EXHAUSTED


class AddressInUse(CNIError):
    """A requested address is already allocated to another container."""

    default_code = ErrorCode.ADDRESS_IN_USE


class PluginNotFound(CNIError):
    """No executable for a plugin type was found in CNI_PATH."""

    default_code = ErrorCode.PLUGIN_NOT_FOUND


class PluginExecFailed(CNIError):
    """A plugin executable crashed, timed out or printed something that is not CNI JSON."""

    default_code = ErrorCode.PLUGIN_EXEC_FAILED


class InternalError(CNIError):
    """An unexpected exception, reported instead of a traceback."""

    default_code = ErrorCode.INTERNAL


_BY_CODE: dict[int, type[CNIError]] = {
    cls.default_code: cls
    for cls in (
        IncompatibleCNIVersion,
        UnsupportedField,
        UnknownContainer,
        InvalidEnvironmentVariables,
        IOFailure,
        DecodingFailure,
        InvalidNetworkConfig,
        TryAgainLater,
        PluginNotAvailable,
        LimitedConnectivity,
        KernelError,
        AddressExhausted,
        AddressInUse,
        PluginNotFound,
        PluginExecFailed,
        InternalError,
    )
}
