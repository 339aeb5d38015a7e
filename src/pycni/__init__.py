"""pycni: a complete Container Network Interface (CNI) stack in Python.

Packages, one concern each: ``spec`` (wire format), ``skel`` (plugin side),
``runtime`` (runtime side), ``host`` (the kernel), ``ipam``, ``plugins``,
``daemon``, ``multi`` and ``cli``.
"""

__all__ = ["__version__"]

__version__ = "0.1.0"
