"""In-memory object store behind the simulated Kubernetes API server.

Why: the HTTP server (``sandbox.kube.server``) and the simulated cluster controllers
(``sandbox.kube.controllers``) share one consistent view of the cluster, with the semantics
of the real API server and etcd, but no HTTP in between.

Guarantees (each as the real API server behaves):
- Every method is thread-safe (``Store.lock``, an RLock) and returns deep copies.
- A global, strictly increasing ``resourceVersion`` (string in objects); an update whose
  ``metadata.resourceVersion`` is set and stale is a 409 Conflict; custom resources
  (milvuses) refuse an update without one (422), as the real server does for CRs.
- Server-owned fields (uid, creationTimestamp, generation, deletionTimestamp) cannot be
  changed by writers; ``generation`` (apps and custom kinds) bumps when anything outside
  ``metadata``/``status`` changes. An update that changes nothing writes nothing.
- Kinds with a status subresource (pods, deployments, statefulsets, milvuses, PVCs, PVs):
  a normal write ignores ``.status``; ``subresource="status"`` writes only ``.status``;
  ``create`` resets the status to what the real server starts with (e.g. a Pod is
  ``{"phase": "Pending"}``, a Milvus has none) -- controllers set status afterwards with
  ``replace(..., subresource="status")`` or ``patch(..., subresource="status")``.
  (``create(..., keep_status=True)`` skips the reset; the HTTP server never uses it.)
- ``delete`` of an object with finalizers only marks it (``deletionTimestamp``, MODIFIED);
  it disappears (DELETED) once a write leaves ``metadata.finalizers`` empty. No new
  finalizers can be added to an object being deleted. Deleting a Namespace deletes its
  contents, and the Namespace goes once they are gone; nothing can be created in a
  terminating namespace (403).
- Subscribers get every change in commit order, synchronously, on the writing thread while
  the lock is held (so they must not block on other threads that use the store); a write
  made from inside a subscriber is delivered after the current event has reached everyone.
- ``events_since`` replays retained history for watch resume; older than the window is 410.
Errors are ``ApiError`` carrying a real ``metav1.Status`` (code, reason, message, details).
"""

from __future__ import annotations

import builtins
import copy
import logging
import random
import threading
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sandbox.kube import crds, validation
from sandbox.kube.patch import PatchApplyError, PatchFormatError, json_patch, merge_patch
from sandbox.kube.selectors import (
    SelectorError,
    labels_match,
    parse_field_selector,
    parse_label_selector,
)

log = logging.getLogger(__name__)

ALL_VERBS: tuple[str, ...] = (
    "create",
    "delete",
    "deletecollection",
    "get",
    "list",
    "patch",
    "update",
    "watch",
)
_BASE_FIELDS: tuple[str, ...] = ("metadata.name", "metadata.namespace")
_GENERATE_CHARS = "bcdfghjklmnpqrstvwxz2456789"

Subscriber = Callable[[str, str, dict[str, Any]], None]
# (resourceVersion, event type, key, object, previous object or None) -- shared, never mutate
Event = tuple[int, str, str, dict[str, Any], dict[str, Any] | None]
WatchListener = Callable[[Event], None]
# Called with (live object or None on create, the object about to be written) inside the lock,
# right before the write; may set metadata.managedFields (see sandbox.kube.managed).
Manage = Callable[[dict[str, Any] | None, dict[str, Any]], None]


@dataclass(frozen=True)
class ResourceType:
    """One REST resource: where it lives in the API and how it behaves."""

    group: str  # "" for core
    version: str  # "v1", "v1beta1"
    plural: str  # "pods"
    kind: str  # "Pod"
    namespaced: bool
    short_names: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS
    status_subresource: bool = False
    crd: bool = False  # served by apiextensions (custom resource): stricter update/patch rules
    name_rule: str = "subdomain"  # "subdomain" | "label" | "dns1035"
    field_labels: tuple[str, ...] = _BASE_FIELDS
    delete_returns_object: bool = False  # the real registry answers DELETE with the object, not a Status
    categories: tuple[str, ...] = ()

    @property
    def key(self) -> str:
        return self.plural if not self.group else f"{self.plural}.{self.group}"

    @property
    def api_version(self) -> str:
        return self.version if not self.group else f"{self.group}/{self.version}"

    @property
    def singular(self) -> str:
        return self.kind.lower()

    @property
    def tracks_generation(self) -> bool:
        return self.group not in ("", "rbac.authorization.k8s.io", "storage.k8s.io") and self.plural != (
            "controllerrevisions"
        )

    @property
    def qualified_kind(self) -> str:
        """'Pod', 'Deployment.apps', 'Milvus.milvus.io' (as in Invalid messages)."""
        return self.kind if not self.group else f"{self.kind}.{self.group}"

    @property
    def storable(self) -> bool:
        return "get" in self.verbs


def _rt(*args: Any, **kwargs: Any) -> ResourceType:
    return ResourceType(*args, **kwargs)


_RESOURCE_LIST: list[ResourceType] = [
    _rt("", "v1", "namespaces", "Namespace", False, ("ns",), name_rule="label", status_subresource=True,
        field_labels=(*_BASE_FIELDS, "status.phase"), delete_returns_object=True),
    _rt("", "v1", "pods", "Pod", True, ("po",), status_subresource=True, delete_returns_object=True,
        field_labels=(*_BASE_FIELDS, "status.phase", "spec.nodeName", "spec.restartPolicy",
                      "spec.schedulerName", "spec.serviceAccountName", "status.podIP",
                      "status.nominatedNodeName"),
        categories=("all",)),
    _rt("", "v1", "services", "Service", True, ("svc",), name_rule="dns1035", status_subresource=True,
        delete_returns_object=True, categories=("all",)),
    _rt("", "v1", "secrets", "Secret", True, (), field_labels=(*_BASE_FIELDS, "type")),
    _rt("", "v1", "configmaps", "ConfigMap", True, ("cm",)),
    _rt("", "v1", "persistentvolumeclaims", "PersistentVolumeClaim", True, ("pvc",), status_subresource=True,
        delete_returns_object=True),
    _rt("", "v1", "persistentvolumes", "PersistentVolume", False, ("pv",), status_subresource=True,
        delete_returns_object=True),
    _rt("", "v1", "events", "Event", True, ("ev",),
        field_labels=(*_BASE_FIELDS, "involvedObject.kind", "involvedObject.namespace", "involvedObject.name",
                      "involvedObject.uid", "involvedObject.apiVersion", "involvedObject.resourceVersion",
                      "involvedObject.fieldPath", "reason", "reportingComponent", "source", "type")),
    _rt("apps", "v1", "deployments", "Deployment", True, ("deploy",), status_subresource=True,
        categories=("all",)),
    _rt("apps", "v1", "statefulsets", "StatefulSet", True, ("sts",), status_subresource=True,
        categories=("all",)),
    _rt("apps", "v1", "replicasets", "ReplicaSet", True, ("rs",), status_subresource=True,
        categories=("all",)),
    _rt("apps", "v1", "controllerrevisions", "ControllerRevision", True),
    _rt("batch", "v1", "jobs", "Job", True, (), status_subresource=True, categories=("all",)),
    _rt("", "v1", "serviceaccounts", "ServiceAccount", True, ("sa",)),
    _rt("rbac.authorization.k8s.io", "v1", "roles", "Role", True, (), name_rule="path"),
    _rt("rbac.authorization.k8s.io", "v1", "rolebindings", "RoleBinding", True, (), name_rule="path"),
    _rt("rbac.authorization.k8s.io", "v1", "clusterroles", "ClusterRole", False, (), name_rule="path"),
    _rt("rbac.authorization.k8s.io", "v1", "clusterrolebindings", "ClusterRoleBinding", False, (),
        name_rule="path"),
    _rt("policy", "v1", "poddisruptionbudgets", "PodDisruptionBudget", True, ("pdb",), status_subresource=True),
    _rt("storage.k8s.io", "v1", "storageclasses", "StorageClass", False, ("sc",)),
    _rt("apiextensions.k8s.io", "v1", "customresourcedefinitions", "CustomResourceDefinition", False,
        ("crd", "crds"), status_subresource=True, categories=("api-extensions",)),
    _rt("milvus.io", "v1beta1", "milvuses", "Milvus", True, ("mi",), status_subresource=True, crd=True),
    _rt("authorization.k8s.io", "v1", "selfsubjectaccessreviews", "SelfSubjectAccessReview", False,
        verbs=("create",)),
    _rt("authorization.k8s.io", "v1", "selfsubjectrulesreviews", "SelfSubjectRulesReview", False,
        verbs=("create",)),
]  # fmt: skip

RESOURCES: dict[str, ResourceType] = {rt.key: rt for rt in _RESOURCE_LIST}


def now_rfc3339() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ApiError(Exception):
    """An API failure carrying what the real server would send: a metav1.Status."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.reason = reason
        self.message = message
        self.details = details

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": self.message,
            "reason": self.reason,
        }
        if self.details is not None:
            out["details"] = self.details
        out["code"] = self.code
        return out

    def __repr__(self) -> str:
        return f"ApiError({self.code}, {self.reason!r}, {self.message!r})"


# ---- error constructors (messages as the real API server words them) ----


def _details(rt: ResourceType, name: str, kind: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {"name": name}
    if rt.group:
        out["group"] = rt.group
    out["kind"] = kind or rt.plural
    return out


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.key} "{name}" not found', _details(rt, name))


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{rt.key} "{name}" already exists', _details(rt, name))


def conflict(rt: ResourceType, name: str, why: str) -> ApiError:
    return ApiError(409, "Conflict", f'Operation cannot be fulfilled on {rt.key} "{name}": {why}', _details(rt, name))


STALE = "the object has been modified; please apply your changes to the latest version and try again"


def invalid(rt: ResourceType, name: str, causes: list[validation.Cause]) -> ApiError:
    parts = [f"{c.field}: {c.message}" for c in causes]
    summary = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details = _details(rt, name, kind=rt.kind)
    details["causes"] = [{"reason": c.reason, "message": c.message, "field": c.field} for c in causes]
    return ApiError(422, "Invalid", f'{rt.qualified_kind} "{name}" is invalid: {summary}', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def method_not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


def gone(message: str = "too old resource version") -> ApiError:
    return ApiError(410, "Expired", message)


def unsupported_patch(rt: ResourceType) -> ApiError:
    accepted = "application/json-patch+json, application/merge-patch+json, application/apply-patch+yaml"
    if not rt.crd:
        accepted = accepted.replace("merge-patch+json, ", "merge-patch+json, application/strategic-merge-patch+json, ")
    return ApiError(
        415,
        "UnsupportedMediaType",
        f"the body of the request was in an unknown format - accepted media types include: {accepted}",
    )


# ---- the store ----


class Store:
    """Thread-safe in-memory API objects with watch history and subscribers."""

    def __init__(self, history_limit: int = 10000) -> None:
        self.lock = threading.RLock()
        self._objects: dict[str, dict[tuple[str, str], dict[str, Any]]] = {k: {} for k in RESOURCES}
        # key -> namespace -> names stored there, in _objects' order (an index over _objects)
        self._names: dict[str, dict[str, dict[str, None]]] = {k: {} for k in RESOURCES}
        self._rv = 0
        self._history: deque[Event] = deque(maxlen=history_limit)
        self._subscribers: list[Subscriber] = []
        self._listeners: list[WatchListener] = []
        self._pending: deque[Event] = deque()
        self._delivering = False
        for ns in ("default", "kube-system", "kube-public", "kube-node-lease"):
            self.ensure_namespace(ns)
        for key, builtin in crds.builtin_objects():
            self.create(key, builtin, keep_status=True)

    # -- lookups --

    @staticmethod
    def resource(key: str) -> ResourceType:
        try:
            return RESOURCES[key]
        except KeyError:
            raise ApiError(404, "NotFound", "the server could not find the requested resource") from None

    def _type(self, key: str, verb: str) -> ResourceType:
        rt = self.resource(key)
        if verb not in rt.verbs:
            raise method_not_allowed()
        return rt

    @staticmethod
    def _ns(rt: ResourceType, namespace: str | None) -> str:
        if not rt.namespaced:
            return ""
        if not namespace:
            raise bad_request("an empty namespace may not be set when a resource name is provided")
        return namespace

    @property
    def resource_version(self) -> int:
        with self.lock:
            return self._rv

    def get(self, key: str, namespace: str | None, name: str) -> dict[str, Any]:
        rt = self._type(key, "get")
        with self.lock:
            obj = self._objects[key].get((self._ns(rt, namespace), name))
            if obj is None:
                raise not_found(rt, name)
            return _clone(obj)

    def try_get(self, key: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        try:
            return self.get(key, namespace, name)
        except ApiError as exc:
            if exc.code == 404:
                return None
            raise

    def list(
        self,
        key: str,
        namespace: str | None = None,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> list[dict[str, Any]]:
        rt = self._type(key, "list")
        matches = self.matcher(rt, label_selector, field_selector)
        with self.lock:
            return [_clone(obj) for obj in self._stored(rt, namespace) if matches(obj)]

    def list_shared(self, key: str, namespace: str | None = None) -> builtins.list[dict[str, Any]]:
        """Like ``list`` without selectors, for in-process readers (the controllers): the stored
        objects themselves, in the same order, not copies -- never mutate them (copy first)."""
        rt = self._type(key, "list")
        with self.lock:
            return self._stored(rt, namespace)

    def _stored(self, rt: ResourceType, namespace: str | None) -> builtins.list[dict[str, Any]]:
        """The stored objects of a kind (in one namespace if given), sorted by (namespace, name)."""
        objs = self._objects[rt.key]
        if namespace and rt.namespaced:
            names = self._names[rt.key].get(namespace)
            return [objs[(namespace, name)] for name in sorted(names)] if names else []
        return [objs[k] for k in sorted(objs)]

    @staticmethod
    def matcher(
        rt: ResourceType, label_selector: str | None, field_selector: str | None
    ) -> Callable[[dict[str, Any]], bool]:
        """A predicate for these selectors; raises ApiError 400 for a malformed selector."""
        try:
            label_reqs = parse_label_selector(label_selector)
            field_reqs = parse_field_selector(field_selector, rt.field_labels)
        except SelectorError as exc:
            raise bad_request(str(exc)) from None

        def matches(obj: dict[str, Any]) -> bool:
            meta = obj.get("metadata") or {}
            return labels_match(label_reqs, meta.get("labels")) and all(f.matches(obj) for f in field_reqs)

        return matches

    # -- writes --

    def ensure_namespace(self, name: str) -> None:
        with self.lock:
            if ("", name) not in self._objects["namespaces"]:
                self.create("namespaces", {"metadata": {"name": name}})

    def create(
        self,
        key: str,
        obj: dict[str, Any],
        namespace: str | None = None,
        *,
        keep_status: bool = False,
        manage: Manage | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        rt = self._type(key, "create")
        if not rt.storable:
            raise method_not_allowed()
        new = self._prepare_body(rt, obj)
        meta = new["metadata"]
        ns = self._body_namespace(rt, meta, namespace)
        with self.lock:
            if ns:
                self._check_namespace_open(ns)
            name = self._assign_name(rt, meta, ns)
            self._stamp_new(rt, new, keep_status)
            self._validate(rt, new, name)
            if manage is not None:
                manage(None, new)
            if dry_run:
                return _clone(new)
            return self._commit("ADDED", rt, new)

    def replace(
        self,
        key: str,
        obj: dict[str, Any],
        *,
        subresource: str | None = None,
        manage: Manage | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        rt = self._type(key, "update")
        new = self._prepare_body(rt, obj)
        meta = new["metadata"]
        ns = self._body_namespace(rt, meta, meta.get("namespace"))
        name = meta.get("name") or ""
        with self.lock:
            old = self._objects[key].get((ns, name))
            if old is None:
                raise not_found(rt, name)
            rv = meta.get("resourceVersion")
            if not rv and rt.crd:
                raise invalid(rt, name, [invalid_rv()])
            return self._update(rt, old, new, subresource, manage, dry_run)

    def patch(
        self,
        key: str,
        namespace: str | None,
        name: str,
        patch: Any,
        patch_type: str,
        *,
        subresource: str | None = None,
        manage: Manage | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        rt = self._type(key, "patch")
        ns = self._ns(rt, namespace)
        with self.lock:
            old = self._objects[key].get((ns, name))
            if old is None:
                raise not_found(rt, name)
            doc = self._apply_patch(rt, old, patch, patch_type)
            if not isinstance(doc, dict):
                raise bad_request("the body of the patched object is not a JSON object")
            meta = doc.get("metadata")
            if not isinstance(meta, dict):
                raise bad_request("the patched object has no metadata")
            if meta.get("name") != name:
                raise bad_request(
                    f"the name of the object ({meta.get('name')}) does not match the name on the URL ({name})"
                )
            if rt.namespaced and meta.get("namespace") != ns:
                raise bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            new = self._prepare_body(rt, doc)
            return self._update(rt, old, new, subresource, manage, dry_run)

    def delete(
        self,
        key: str,
        namespace: str | None,
        name: str,
        *,
        uid: str | None = None,
        resource_version: str | None = None,
        propagation_policy: str | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        """Delete (or mark for deletion) one object.

        ``propagation_policy`` as in DeleteOptions: "Foreground" adds the ``foregroundDeletion``
        finalizer when the object has dependents (objects whose ownerReferences name its uid;
        the controllers remove it once the dependents are gone), "Orphan" strips the
        ownerReferences from the dependents first; "Background" (default) leaves dependents
        to the controllers' garbage collection.
        """
        rt = self._type(key, "delete")
        ns = self._ns(rt, namespace)
        with self.lock:
            old = self._objects[key].get((ns, name))
            if old is None:
                raise not_found(rt, name)
            meta = old["metadata"]
            if uid is not None and uid != meta["uid"]:
                why = f"Precondition failed: UID in precondition: {uid}, UID in object meta: {meta['uid']}"
                raise conflict(rt, name, why)
            if resource_version is not None and resource_version != meta["resourceVersion"]:
                why = (
                    f"Precondition failed: ResourceVersion in precondition: {resource_version}, "
                    f"ResourceVersion in object meta: {meta['resourceVersion']}"
                )
                raise conflict(rt, name, why)
            if dry_run:  # every check passed; nothing is written
                return _clone(old)
            if key == "namespaces":
                return self._delete_namespace(old)
            old = self._apply_propagation(rt, old, propagation_policy)
            meta = old["metadata"]
            if meta.get("finalizers"):
                if meta.get("deletionTimestamp"):
                    return _clone(old)
                return self._commit("MODIFIED", rt, self._marked_for_deletion(rt, old))
            return self._remove(rt, old)

    # -- subscription and history --

    def subscribe(self, fn: Subscriber) -> Callable[[], None]:
        with self.lock:
            self._subscribers.append(fn)

        def unsubscribe() -> None:
            with self.lock:
                if fn in self._subscribers:
                    self._subscribers.remove(fn)

        return unsubscribe

    def events_since(self, rv: int) -> builtins.list[tuple[int, str, str, dict[str, Any]]]:
        """Retained events with resourceVersion > rv, oldest first (shared copies: do not mutate)."""
        return [(e[0], e[1], e[2], e[3]) for e in self.history_since(rv)]

    def history_since(self, rv: int) -> builtins.list[Event]:
        """Like events_since, with each event's previous object (None for ADDED)."""
        with self.lock:
            if rv >= self._rv:
                return []
            oldest = self._history[0][0] if self._history else self._rv + 1
            if rv < oldest - 1:
                raise gone(f"too old resource version: {rv} ({oldest - 1})")
            return [event for event in self._history if event[0] > rv]

    def listen(self, fn: WatchListener) -> Callable[[], None]:
        """Like subscribe, for watchers: fn(event) with shared objects and the previous object.

        Call it under ``lock`` together with ``history_since``/``list`` to get a gap-free stream.
        """
        with self.lock:
            self._listeners.append(fn)

        def unlisten() -> None:
            with self.lock:
                if fn in self._listeners:
                    self._listeners.remove(fn)

        return unlisten

    # -- internals --

    def _prepare_body(self, rt: ResourceType, obj: Any) -> dict[str, Any]:
        if not isinstance(obj, dict):
            raise bad_request(f"the object provided is not a {rt.kind}: expected a JSON object")
        new = _clone(obj)
        if new.get("kind") not in (None, "", rt.kind):
            raise bad_request(f"the kind in the body ({new['kind']}) does not match the expected kind ({rt.kind})")
        if new.get("apiVersion") not in (None, "", rt.api_version):
            raise bad_request(
                f"the API version in the data ({new['apiVersion']}) does not match the expected API version "
                f"({rt.api_version})"
            )
        meta = new.get("metadata")
        if meta is None:
            meta = new["metadata"] = {}
        if not isinstance(meta, dict):
            raise bad_request("json: cannot unmarshal into Go struct field of type v1.ObjectMeta")
        try:
            validation.decode_checks(rt.key, new)
        except validation.DecodeError as exc:
            raise bad_request(str(exc)) from None
        new["apiVersion"] = rt.api_version
        new["kind"] = rt.kind
        return new

    @staticmethod
    def _body_namespace(rt: ResourceType, meta: dict[str, Any], namespace: str | None) -> str:
        if not rt.namespaced:
            meta.pop("namespace", None)
            return ""
        body_ns = meta.get("namespace")
        if namespace and body_ns and body_ns != namespace:
            raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
        ns = namespace or body_ns or "default"
        meta["namespace"] = ns
        return ns

    def _check_namespace_open(self, ns: str) -> None:
        nsobj = self._objects["namespaces"].get(("", ns))
        if nsobj is None:
            raise not_found(RESOURCES["namespaces"], ns)
        if nsobj["metadata"].get("deletionTimestamp"):
            raise ApiError(
                403,
                "Forbidden",
                f"unable to create new content in namespace {ns} because it is being terminated",
                {"name": ns, "kind": "namespaces"},
            )

    def _assign_name(self, rt: ResourceType, meta: dict[str, Any], ns: str) -> str:
        name = meta.get("name") or ""
        if not name and meta.get("generateName"):
            prefix = str(meta["generateName"])
            while True:
                name = prefix + "".join(random.choices(_GENERATE_CHARS, k=5))
                if (ns, name) not in self._objects[rt.key]:
                    break
            meta["name"] = name
        if not name:
            raise invalid(rt, "", [validation.required("metadata.name", "name or generateName is required")])
        causes = validation.name_causes(name, rt.name_rule)
        if causes:
            raise invalid(rt, name, causes)
        if (ns, name) in self._objects[rt.key]:
            raise already_exists(rt, name)
        return name

    def _stamp_new(self, rt: ResourceType, new: dict[str, Any], keep_status: bool) -> None:
        meta = new["metadata"]
        for server_field in ("deletionTimestamp", "deletionGracePeriodSeconds", "selfLink", "managedFields"):
            meta.pop(server_field, None)
        meta["uid"] = str(uuid.uuid4())
        meta["creationTimestamp"] = now_rfc3339()
        meta.pop("resourceVersion", None)
        if rt.tracks_generation:
            meta["generation"] = 1
        else:
            meta.pop("generation", None)
        validation.apply_defaults(rt.key, new)
        if (rt.status_subresource and not keep_status) or rt.key == "namespaces":
            initial = validation.INITIAL_STATUS.get(rt.key)
            if initial is None:
                new.pop("status", None)
            else:
                new["status"] = _clone(initial)

    def _validate(self, rt: ResourceType, obj: dict[str, Any], name: str) -> None:
        causes = validation.metadata_causes(obj["metadata"]) + validation.kind_causes(rt.key, obj)
        if causes:
            raise invalid(rt, name, causes)

    def _apply_patch(self, rt: ResourceType, old: dict[str, Any], patch: Any, patch_type: str) -> Any:
        if patch_type == "json":
            try:
                return json_patch(old, patch)
            except PatchFormatError as exc:
                raise bad_request(str(exc)) from None
            except PatchApplyError as exc:
                raise ApiError(
                    422,
                    "Invalid",
                    "the server rejected our request due to an error in our request",
                    {"causes": [{"reason": "UnexpectedServerResponse", "message": str(exc)}]},
                ) from None
        if patch_type == "strategic" and rt.crd:
            raise unsupported_patch(rt)
        if patch_type in ("merge", "strategic"):
            if not isinstance(patch, dict):
                raise bad_request(
                    "error decoding patch: json: cannot unmarshal into Go value of type map[string]interface {}"
                )
            return merge_patch(old, patch)
        raise unsupported_patch(rt)

    def _update(
        self,
        rt: ResourceType,
        old: dict[str, Any],
        new: dict[str, Any],
        subresource: str | None,
        manage: Manage | None = None,
        dry_run: bool = False,
    ) -> dict[str, Any]:
        name = old["metadata"]["name"]
        rv = new["metadata"].get("resourceVersion")
        if rv and rv != old["metadata"]["resourceVersion"]:
            raise conflict(rt, name, STALE)
        if subresource not in (None, "status"):
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        if subresource == "status" and not rt.status_subresource:
            raise ApiError(404, "NotFound", "the server could not find the requested resource")
        merged = self._merge_for_update(rt, old, new, subresource)
        self._check_immutable(rt, old, new, merged)
        self._validate(rt, merged, name)
        if manage is not None:
            manage(old, merged)
        if _content(merged) == _content(old):
            return _clone(old)  # a no-op update writes nothing, like the real server
        if dry_run:
            return _clone(merged)
        if rt.tracks_generation and _spec_part(merged) != _spec_part(old):
            merged["metadata"]["generation"] = old["metadata"].get("generation", 1) + 1
        if merged["metadata"].get("deletionTimestamp") and not merged["metadata"].get("finalizers"):
            return self._remove(rt, merged)
        return self._commit("MODIFIED", rt, merged)

    @staticmethod
    def _merge_for_update(
        rt: ResourceType, old: dict[str, Any], new: dict[str, Any], subresource: str | None
    ) -> dict[str, Any]:
        if subresource == "status":
            merged = _clone(old)
            if new.get("status") is None:
                merged.pop("status", None)
            else:
                merged["status"] = new["status"]
            return merged
        merged = new
        meta = merged["metadata"]
        old_meta = old["metadata"]
        for server_field in (
            "uid",
            "creationTimestamp",
            "generation",
            "deletionTimestamp",
            "deletionGracePeriodSeconds",
        ):
            if server_field in old_meta:
                if server_field != "uid" or not meta.get("uid"):
                    meta[server_field] = old_meta[server_field]
            else:
                meta.pop(server_field, None)
        if rt.status_subresource or rt.key == "namespaces":
            if "status" in old:
                merged["status"] = _clone(old["status"])
            else:
                merged.pop("status", None)
        if rt.key == "namespaces":
            merged["spec"] = _clone(old.get("spec", {}))
        validation.apply_update_defaults(rt.key, old, merged)
        return merged

    @staticmethod
    def _check_immutable(rt: ResourceType, old: dict[str, Any], new: dict[str, Any], merged: dict[str, Any]) -> None:
        name = old["metadata"]["name"]
        causes: list[validation.Cause] = []
        new_uid = new["metadata"].get("uid")
        if new_uid and new_uid != old["metadata"]["uid"]:
            causes.append(validation.invalid("metadata.uid", new_uid, "field is immutable"))
        if old["metadata"].get("deletionTimestamp"):
            before = set(old["metadata"].get("finalizers") or [])
            added = [f for f in merged["metadata"].get("finalizers") or [] if f not in before]
            if added:
                listed = ", ".join(f'"{f}"' for f in added)
                causes.append(
                    validation.forbidden(
                        "metadata.finalizers",
                        "no new finalizers can be added if the object is being deleted, "
                        f"found new finalizers []string{{{listed}}}",
                    )
                )
        if old.get("immutable") and any(old.get(f) != merged.get(f) for f in ("data", "binaryData")):
            causes.append(validation.forbidden("data", "field is immutable when `immutable` is set"))
        causes += validation.update_causes(rt.key, old, merged)
        if causes:
            raise invalid(rt, name, causes)

    def _dependents(self, uid: str) -> builtins.list[tuple[ResourceType, dict[str, Any]]]:
        out = []
        for key, objs in self._objects.items():
            for obj in objs.values():
                refs = obj["metadata"].get("ownerReferences") or []
                if any(ref.get("uid") == uid for ref in refs):
                    out.append((RESOURCES[key], obj))
        return out

    def _apply_propagation(self, rt: ResourceType, old: dict[str, Any], policy: str | None) -> dict[str, Any]:
        if policy not in (None, "Background", "Foreground", "Orphan"):
            raise ApiError(
                422,
                "Invalid",
                f'DeleteOptions.meta.k8s.io "" is invalid: propagationPolicy: Unsupported value: "{policy}": '
                'supported values: "Foreground", "Background", "Orphan"',
            )
        if policy in (None, "Background") or old["metadata"].get("deletionTimestamp"):
            return old
        uid = old["metadata"]["uid"]
        dependents = self._dependents(uid)
        if policy == "Orphan":
            for dep_rt, dep in dependents:
                freed = _clone(dep)
                refs = [r for r in freed["metadata"]["ownerReferences"] if r.get("uid") != uid]
                if refs:
                    freed["metadata"]["ownerReferences"] = refs
                else:
                    freed["metadata"].pop("ownerReferences")
                self._commit("MODIFIED", dep_rt, freed)
            return old
        if not dependents or "foregroundDeletion" in (old["metadata"].get("finalizers") or []):
            return old
        marked = _clone(old)
        marked["metadata"]["finalizers"] = [
            *(marked["metadata"].get("finalizers") or []),
            "foregroundDeletion",
        ]
        return marked

    def _marked_for_deletion(self, rt: ResourceType, old: dict[str, Any]) -> dict[str, Any]:
        marked = _clone(old)
        meta = marked["metadata"]
        meta["deletionTimestamp"] = now_rfc3339()
        meta["deletionGracePeriodSeconds"] = 0
        if rt.tracks_generation:
            meta["generation"] = meta.get("generation", 1) + 1
        return marked

    def _delete_namespace(self, nsobj: dict[str, Any]) -> dict[str, Any]:
        rt = RESOURCES["namespaces"]
        ns = nsobj["metadata"]["name"]
        if not nsobj["metadata"].get("deletionTimestamp"):
            marked = self._marked_for_deletion(rt, nsobj)
            marked["status"] = {"phase": "Terminating"}
            result = self._commit("MODIFIED", rt, marked)
            for key in self._objects:
                if RESOURCES[key].namespaced:
                    for obj_name in list(self._names[key].get(ns) or ()):
                        self.delete(key, ns, obj_name)
        else:
            result = _clone(nsobj)
        self._finish_namespace(ns)
        return result

    def _finish_namespace(self, ns: str) -> None:
        nsobj = self._objects["namespaces"].get(("", ns))
        if nsobj is None or not nsobj["metadata"].get("deletionTimestamp"):
            return
        if any(self._names[key].get(ns) for key in self._objects if RESOURCES[key].namespaced):
            return
        self._remove(RESOURCES["namespaces"], nsobj)

    def _remove(self, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        ns = meta.get("namespace", "") if rt.namespaced else ""
        prev = self._objects[rt.key].pop((ns, meta["name"]), None)
        if prev is not None:
            self._unindex(rt.key, ns, meta["name"])
        gone_obj = _clone(obj)
        self._rv += 1
        gone_obj["metadata"]["resourceVersion"] = str(self._rv)
        result = _clone(gone_obj)
        self._record("DELETED", rt.key, gone_obj, prev)
        if rt.namespaced:
            self._finish_namespace(ns)
        return result

    def _commit(self, event: str, rt: ResourceType, obj: dict[str, Any]) -> dict[str, Any]:
        meta = obj["metadata"]
        ns = meta.get("namespace", "") if rt.namespaced else ""
        self._rv += 1
        meta["resourceVersion"] = str(self._rv)
        prev = self._objects[rt.key].get((ns, meta["name"]))
        self._objects[rt.key][(ns, meta["name"])] = obj
        if prev is None:
            self._names[rt.key].setdefault(ns, {})[meta["name"]] = None
        # The stored object is never changed in place (every write stores a new one), so the
        # history and the watchers share it; callers get their own copy.
        result = _clone(obj)
        self._record(event, rt.key, obj, prev)
        return result

    def _unindex(self, key: str, ns: str, name: str) -> None:
        names = self._names[key].get(ns)
        if names is not None:
            names.pop(name, None)
            if not names:
                del self._names[key][ns]

    def _record(self, event: str, key: str, obj: dict[str, Any], prev: dict[str, Any] | None) -> None:
        entry: Event = (self._rv, event, key, obj, prev)
        self._history.append(entry)
        self._pending.append(entry)
        self._deliver()

    def _deliver(self) -> None:
        if self._delivering:
            return
        self._delivering = True
        try:
            while self._pending:
                entry = self._pending.popleft()
                _, event, key, obj, _ = entry
                for listener in list(self._listeners):
                    try:
                        listener(entry)
                    except Exception:
                        log.exception("store watch listener failed on %s %s", event, key)
                for fn in list(self._subscribers):
                    try:
                        fn(event, key, _clone(obj))
                    except Exception:
                        log.exception("store subscriber failed on %s %s", event, key)
        finally:
            self._delivering = False


_ATOMS = (str, int, float, bool, type(None))


def _clone(value: Any) -> Any:
    """A deep copy of a JSON-like value (dicts, lists, scalars), as ``copy.deepcopy`` makes it
    but several times faster; anything else is left to ``copy.deepcopy``."""
    kind = type(value)
    if kind is dict:
        return {k: v if type(v) in _ATOMS else _clone(v) for k, v in value.items()}
    if kind is list:
        return [v if type(v) in _ATOMS else _clone(v) for v in value]
    if kind in _ATOMS:
        return value
    return copy.deepcopy(value)


def invalid_rv() -> validation.Cause:
    return validation.Cause(
        "FieldValueInvalid", "metadata.resourceVersion", "Invalid value: 0x0: must be specified for an update"
    )


def _content(obj: dict[str, Any]) -> dict[str, Any]:
    out = dict(obj)
    meta = dict(out.get("metadata") or {})
    meta.pop("resourceVersion", None)
    out["metadata"] = meta
    return out


def _spec_part(obj: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in obj.items() if k not in ("metadata", "status", "apiVersion", "kind")}
