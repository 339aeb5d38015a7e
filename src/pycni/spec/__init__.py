"""The CNI wire format, with no I/O: configs, results of every version, errors.

The public names are the imports under ``if TYPE_CHECKING:`` below, loaded from their
submodules on first use (:func:`pycni._lazy.lazy_init`): a plugin process never loads the
conflist module, for one.
"""
# mypy: implicit-reexport
# ruff: noqa: F401

from .._lazy import lazy_init

# A plain constant rather than typing's (importing typing here would cost every user).
TYPE_CHECKING = False
if TYPE_CHECKING:
    from ._config import (
        NAME_RE,
        NAME_RULE,
        NetworkConfig,
        is_valid_name,
    )
    from ._conflist import (
        GCAttachment,
        NetworkConfigList,
        derive_runtime_config,
    )
    from ._errors import (
        AddressExhausted,
        AddressInUse,
        CNIError,
        DecodingFailure,
        ErrorCode,
        IncompatibleCNIVersion,
        InternalError,
        InvalidEnvironmentVariables,
        InvalidNetworkConfig,
        IOFailure,
        KernelError,
        LimitedConnectivity,
        PluginExecFailed,
        PluginNotAvailable,
        PluginNotFound,
        TryAgainLater,
        UnknownContainer,
        UnsupportedField,
    )
    from ._fields import (
        IFNAME_MAX,
        LEGACY_ATTACHMENTS_KEY,
        VALID_ATTACHMENTS_KEY,
        bool_field,
        check_ifname,
        ifname_field,
        ifname_problem,
        int_field,
        opt_bool,
        str_default,
        str_field,
        str_list,
        valid_attachments,
    )
    from ._json import decode_json, decode_json_object
    from ._result import (
        DNS,
        Interface,
        IPAddress,
        IPConfig,
        IPInterface,
        Result,
        Route,
        parse_cidr,
        parse_ip,
    )
    from ._version import (
        COMMAND_MIN_VERSION,
        CURRENT_VERSION,
        SUPPORTED_VERSIONS,
        highest_supported,
        parse_version,
        require_supported,
        version_at_least,
    )

__getattr__, __dir__, __all__ = lazy_init(__name__, __file__)
