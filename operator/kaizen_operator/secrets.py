"""Reading Secrets where the operator is bound to, and saying what to bind where it is not.

The operator has no cluster-wide access to Secrets (docs/security.md, "The operator
reads Secrets only where it is bound"): the chart's ClusterRole
``<release>-operator-secrets`` (get secrets) is bound per namespace by a RoleBinding of
the same name. Where it is missing the apiserver answers 403; the object that names the
Secret then gets a condition saying which RoleBinding to create, instead of a
reconcile that fails and retries forever.
"""

from __future__ import annotations

import json
import re
from typing import Any

from kaizen_operator.kube import ApiException, Kube

SECRET_ACCESS_DENIED = "SecretAccessDenied"  # the condition reason  # noqa: S105
_USER = re.compile(r'User "([^"]+)" cannot')
_SERVICE_ACCOUNT = re.compile(r"system:serviceaccount:([^:]+):([^:]+)")


class SecretAccessDenied(Exception):
    """The apiserver refused the operator a Secret (403); the message names the
    RoleBinding that grants it."""

    def __init__(self, namespace: str, name: str, user: str) -> None:
        super().__init__(access_denied_message(namespace, name, user))
        self.namespace, self.name = namespace, name


def access_denied_message(namespace: str, name: str, user: str) -> str:
    """What an administrator does so that ``user`` (the operator's identity, as the
    apiserver named it) may read Secret ``name`` of ``namespace``. Pure."""
    account = _SERVICE_ACCOUNT.fullmatch(user)
    if account:
        account_ns, account_name = account.groups()
        role = f"{account_name}-secrets"  # the chart's name for it
        how = (
            f"kubectl -n {namespace} create rolebinding {role} --clusterrole={role} "
            f"--serviceaccount={account_ns}:{account_name}"
        )
    else:
        how = f"grant {user or 'the operator'} get on secrets in namespace {namespace}"
    return (
        f"the operator may not read Secret {name!r} in namespace {namespace!r}: it reads "
        f"Secrets only in namespaces where a RoleBinding allows it; an administrator "
        f"creates it with: {how}"
    )


def _user(exc: ApiException) -> str:
    try:
        message = str(json.loads(exc.body or "{}").get("message") or "")
    except (ValueError, AttributeError):
        message = ""
    found = _USER.search(message)
    return found.group(1) if found else ""


async def read_secret(kube: Kube, namespace: str, name: str) -> dict[str, Any] | None:
    """The Secret, None when it does not exist; SecretAccessDenied on 403."""
    try:
        return await kube.get("v1", "Secret", namespace, name)
    except ApiException as exc:
        if exc.status == 403:
            raise SecretAccessDenied(namespace, name, _user(exc)) from None
        raise
