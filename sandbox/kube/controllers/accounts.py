"""The ServiceAccount controller: every active namespace has a ServiceAccount ``default``.

As kube-controller-manager's serviceaccount-controller: created when the namespace appears, and
created again if someone deletes it. (No token Secrets: since 1.24 tokens are projected.)
"""

from __future__ import annotations

from sandbox.kube.controllers._base import Context, deleting
from sandbox.kube.store import ApiError

SA_KEY = "serviceaccounts"


class ServiceAccountController:
    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx

    def reconcile(self, namespace: str) -> None:
        ns = self.ctx.store.try_get("namespaces", None, namespace)
        if ns is None or deleting(ns):
            return
        if self.ctx.store.try_get(SA_KEY, namespace, "default") is not None:
            return
        try:
            self.ctx.store.create(SA_KEY, {"metadata": {"name": "default"}}, namespace=namespace)
        except ApiError as exc:
            if exc.code not in (403, 409):
                raise
