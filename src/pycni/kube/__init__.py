"""Kubernetes API credentials shared by the cluster datastore and the multi-network plugin.

:class:`KubeCredentials` builds a lightkube client from a kubeconfig or, without one, from
the in-cluster service-account files, rebuilds it when those files change on disk, and
retries a request once with fresh credentials after a 401 (the kubelet rotates projected
tokens; an expired token must not break pod creation, Multus#852). :class:`Informer` is a
list+watch cache of one kind of object on top of it. lightkube is imported
only here and by the modules that use a client, so nothing below pays for it.
"""

from ._credentials import SERVICE_ACCOUNT_DIR, KubeCredentials
from ._informer import Informer

__all__ = ["SERVICE_ACCOUNT_DIR", "Informer", "KubeCredentials"]
