"""Tags, selectors and resource names shared by every backend.

A retried create finds what an earlier attempt made, and a delete finds everything of a deployment,
through the cloud-paas tags (:data:`~airflow_cloud_paas.backends.base.TAG_DEPLOYMENT` and its two
siblings) and through names derived from (deployment, node, index). Both live here once, so the
backends agree on them: everything in this module is deterministic, and what it returns for a given
input must never change (resources made by an earlier version are found by exactly these values).

Each provider's own alphabet and length rules stay in its backend, built from the pieces below
(e.g. Compute Engine instance names from :func:`slug` and :func:`digest`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from typing import Any

from airflow_cloud_paas.backends.base import TAG_DEPLOYMENT, TAG_INDEX, TAG_NODE

#: the three tags that identify a node instance, in this order
TAG_KEYS = (TAG_DEPLOYMENT, TAG_NODE, TAG_INDEX)
#: label put on every container, volume and Kubernetes object this package makes (with the three tags)
MANAGED_BY_LABEL = "app.kubernetes.io/managed-by"
MANAGED_BY = "airflow-cloud-paas"
#: the short prefix of container, Kubernetes and Compute Engine names
SHORT_PREFIX = "cp"
#: the prefix of per-node security groups and key pairs (AWS, OpenStack) and of Azure resource groups
LONG_PREFIX = "cloud-paas"

_GCE_LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")


# ------------------------------------------------------------------------------------------ tags
def tag_selector(deployment_id: str, node_name: str | None = None, index: int | None = None) -> dict[str, str]:
    """Return the tags that select a deployment, one node of it, or one instance.

    :param deployment_id: the deployment's id
    :param node_name: only this node
    :param index: only this instance index
    """
    tags = {TAG_DEPLOYMENT: deployment_id}
    if node_name is not None:
        tags[TAG_NODE] = node_name
    if index is not None:
        tags[TAG_INDEX] = str(index)
    return tags


def tags_match(tags: Mapping[str, Any] | None, selector: Mapping[str, str]) -> bool:
    """Return whether a resource's tags hold every key/value of a selector.

    Backends filter on their side too: a provider (or a proxy) that ignores a filter must never widen a delete.

    :param tags: the resource's tags or labels
    :param selector: from :func:`tag_selector`
    """
    tags = tags or {}
    return all(tags.get(key) == value for key, value in selector.items())


def carries_all_tags(tags: Mapping[str, Any] | None) -> bool:
    """Return whether a resource carries all three tags (a hand-made one with only some of them is not ours).

    :param tags: the resource's tags or labels
    """
    return set(TAG_KEYS) <= set(tags or {})


def ours(tags: Mapping[str, Any] | None, selector: Mapping[str, str]) -> bool:
    """Return whether a node instance's resource is ours and matches a selector.

    :param tags: the resource's tags or labels
    :param selector: from :func:`tag_selector`
    """
    return carries_all_tags(tags) and tags_match(tags, selector)


def key_values(tags: Mapping[str, str]) -> list[str]:
    """Return tags as ``key=value`` strings (Neutron tags, Docker label filters, Kubernetes selectors).

    :param tags: the tags
    """
    return [f"{key}={value}" for key, value in tags.items()]


def resource_of(tags: Mapping[str, str]) -> tuple[str, str, int]:
    """Return (deployment id, node name, index) read back from a resource's tags.

    :param tags: the tags of a resource that :func:`carries_all_tags`
    """
    return tags[TAG_DEPLOYMENT], tags[TAG_NODE], int(tags[TAG_INDEX])


# ------------------------------------------------------------------------------------------ name pieces
def digest(*parts: str, length: int = 8, algorithm: str = "sha256") -> str:
    """Return a short hex digest of some strings (joined by NUL, so ``("a-b",)`` and ``("a", "b")`` differ).

    :param parts: the strings
    :param length: how many hex digits
    :param algorithm: a :mod:`hashlib` algorithm (Azure names use ``sha1``)
    """
    return hashlib.new(algorithm, "\0".join(parts).encode()).hexdigest()[:length]


def slug(value: str) -> str:
    """Return ``value`` lower-cased with every run of other characters than ``[a-z0-9]`` as one ``-``.

    :param value: the text
    """
    return re.sub(r"-+", "-", re.sub(r"[^a-z0-9-]+", "-", value.lower())).strip("-")


def instance_stem(deployment_id: str, node_name: str, index: int, prefix: str | None = None) -> str:
    """Return ``[<prefix>-]<deployment>-<node>-<index>``: the base of a node instance's resource names.

    :param deployment_id: the deployment's id
    :param node_name: the node template's name
    :param index: the instance index
    :param prefix: put first, if given
    """
    return "-".join(str(p) for p in (prefix, deployment_id, node_name, index) if p is not None)


def node_stem(deployment_id: str, node_name: str, prefix: str | None = None) -> str:
    """Return ``[<prefix>-]<deployment>-<node>``: the base of the names of a node's shared resources.

    :param deployment_id: the deployment's id
    :param node_name: the node template's name
    :param prefix: put first, if given
    """
    return "-".join(p for p in (prefix, deployment_id, node_name) if p is not None)


# ------------------------------------------------------------------------------------------ name rules
def dns_name(*parts: Any, limit: int = 63) -> str:
    """Return a DNS-1123 name (lowercase letters, digits, ``-``) of parts joined by ``-``.

    A name that had to be rewritten, or cut to ``limit``, ends with a hash of the original parts, so two
    different inputs never share a name (``a_b`` and ``a-b`` would). Containers, Docker networks and
    volumes, and Kubernetes objects are named this way.

    :param parts: the name's parts
    :param limit: the maximum length
    """
    raw = "-".join(str(p) for p in parts)
    name = re.sub(r"[^a-z0-9-]+", "-", raw.lower()).strip("-")
    if name == raw and len(name) <= limit:
        return name
    return f"{name[: limit - 9].rstrip('-')}-{digest(raw)}"


def bounded_name(text: str, limit: int) -> str:
    """Return ``text`` as letters, digits and hyphens, at most ``limit`` characters (Azure's names).

    Too long a name keeps its start and gets a hash of the whole, so that names stay distinct.

    :param text: the wanted name
    :param limit: the resource type's maximum length
    """
    clean = re.sub(r"[^A-Za-z0-9-]+", "-", text).strip("-")
    if len(clean) > limit:
        clean = f"{clean[:limit - 9].rstrip('-')}-{digest(text, algorithm='sha1')}"
    return clean


def plain_name(text: str, limit: int = 255) -> str:
    """Return ``text`` with every run of other characters than ``[A-Za-z0-9._-]`` as one ``-``, cut to ``limit``.

    OpenStack's names (servers, volumes, security groups) take anything; this keeps them readable.

    :param text: the wanted name
    :param limit: the maximum length
    """
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text)[:limit]


# ------------------------------------------------------------------------------------------ labels
def label_key(tag: str) -> str:
    """Return the Compute Engine label key of a cloud-paas tag key (``cloud-paas-node`` -> ``cloud_paas_node``).

    :param tag: the tag key
    """
    return tag.replace("-", "_")


def label_value(value: str) -> str:
    """Return a Compute Engine label value: itself when already valid, else a slug plus a hash of the original.

    Deterministic, so a label filter finds the resource again; the exact value is kept elsewhere too.

    :param value: the tag value
    """
    if _GCE_LABEL_VALUE.fullmatch(value):
        return value
    clean = re.sub(r"[^a-z0-9_-]+", "-", value.lower())
    return f"{clean[:54]}-{digest(value)}"
