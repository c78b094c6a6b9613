"""Objects a real cluster (with milvus-operator's CRDs installed) has before anyone writes to it.

``builtin_objects()`` yields ``(store key, object)`` pairs the store creates at start: the
``milvuses.milvus.io`` CustomResourceDefinition (v1beta1 served and stored, status subresource,
names and printer columns as milvus-operator ships them, status ``Established``), so that
``kubectl get crd`` and clients that look the CRD up find it. The milvuses type itself is served
from the hard-coded ``ResourceType`` in the store, not from this object.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

CRD_KEY = "customresourcedefinitions.apiextensions.k8s.io"
_STAMP = "2024-01-01T00:00:00Z"


def milvus_crd() -> dict[str, Any]:
    names = {
        "kind": "Milvus",
        "listKind": "MilvusList",
        "plural": "milvuses",
        "singular": "milvus",
        "shortNames": ["mi"],
    }
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": "milvuses.milvus.io",
            "annotations": {"controller-gen.kubebuilder.io/version": "v0.16.5"},
        },
        "spec": {
            "group": "milvus.io",
            "names": names,
            "scope": "Namespaced",
            "conversion": {"strategy": "None"},
            "versions": [
                {
                    "name": "v1beta1",
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [
                        {"name": "Mode", "type": "string", "jsonPath": ".spec.mode"},
                        {"name": "Status", "type": "string", "jsonPath": ".status.status"},
                        {
                            "name": "Updated",
                            "type": "string",
                            "jsonPath": '.status.conditions[?(@.type=="MilvusUpdated")].status',
                        },
                        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
                    ],
                    "schema": {
                        "openAPIV3Schema": {
                            "type": "object",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                                "status": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
                            },
                        }
                    },
                }
            ],
        },
        "status": {
            "acceptedNames": dict(names),
            "conditions": [
                {
                    "type": "NamesAccepted",
                    "status": "True",
                    "lastTransitionTime": _STAMP,
                    "reason": "NoConflicts",
                    "message": "no conflicts found",
                },
                {
                    "type": "Established",
                    "status": "True",
                    "lastTransitionTime": _STAMP,
                    "reason": "InitialNamesAccepted",
                    "message": "the initial names have been accepted",
                },
            ],
            "storedVersions": ["v1beta1"],
        },
    }


def builtin_objects() -> Iterator[tuple[str, dict[str, Any]]]:
    yield CRD_KEY, milvus_crd()
