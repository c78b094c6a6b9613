"""Simulated cluster behaviour behind the sandbox Kubernetes API server.

``ClusterSim(store).start()`` runs, in one background thread, what a real cluster does on its
own: the StatefulSet, Deployment, ReplicaSet, Job, PodDisruptionBudget, ServiceAccount,
PV/PVC (StorageClass provisioning, protection, reclaim) and garbage collection controllers, a
scheduler and kubelet that turn pods Ready after a short delay (or keep them unready on request;
Job pods run to Succeeded), and a milvus-operator. See ``sim.py`` for the engine and each
module for what it simulates and how strictly.
"""

from __future__ import annotations

from sandbox.kube.controllers.sim import RECLAIM_POLICIES, ClusterSim

__all__ = ["RECLAIM_POLICIES", "ClusterSim"]
