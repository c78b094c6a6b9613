"""The words of each checkpoint: what an approval of it will do, from its recorded target.

Pure functions of a ``Checkpoint`` (no I/O); ``handlers.views`` lays them out in Block Kit.
"""

from __future__ import annotations

from bot.procedure import flush, volumes
from state.model import Checkpoint


def checkpoint_body(cp: Checkpoint) -> str:
    t = cp.target
    note = f"*{t['note']}*\n" if t.get("note") else ""
    if cp.kind == "flush_done" and t.get("operator"):
        return (
            f"{note}Flushed every database of `{t['release']}`:\n{flush.flush_text(t.get('flush', {}))}\n"
            "Approving confirms that *all writers are stopped*, and lets me flush once more and save the Milvus "
            "resource's manifest; deleting the resource (and Pulsar V2 with it) waits for the next checkpoint."
        )
    if cp.kind == "flush_done":
        return (
            f"{note}Flushed every database of `{t['release']}`:\n{flush.flush_text(t.get('flush', {}))}\n"
            "Approving confirms that *all writers are stopped*, and lets me flush once more, save the values "
            "and *stop Milvus (helm uninstall) and delete Pulsar V2*."
        )
    if cp.kind == "pvc_list" and t.get("operator"):
        return (
            f"{note}milvus-operator will delete these Pulsar PVCs (labels `app=pulsar,release={t['release']}-pulsar`) "
            f"in namespace `{t['namespace']}` when the Milvus resource goes; I then delete the PVs left:\n"
            f"{volumes.volumes_text(t.get('pvcs', []), t.get('pvs', []))}\n"
            "Approving patches the resource (etcd and MinIO: Retain, PVCs kept; Pulsar: Delete with its PVCs) and "
            "deletes it. Before that I list the PVCs again; if the list grew, nothing is changed and I ask again."
        )
    if cp.kind == "pvc_list":
        return (
            f"{note}These PVCs (labels `app=pulsar`) in namespace `{t['namespace']}` and the PVs bound to them "
            f"will be deleted:\n{volumes.volumes_text(t.get('pvcs', []), t.get('pvs', []))}\n"
            "Before deleting, I list them again; if the list differs, nothing is deleted and I ask again."
        )
    if cp.kind == "reinstall" and t.get("operator"):
        diff = "\n".join(t.get("diff", [])) or "(no change)"
        return (
            f"{note}Create the Milvus resource `{t['release']}` again from the saved manifest (server-set fields "
            f"removed), with Pulsar V3. Manifest diff:\n```{diff}```"
        )
    if cp.kind == "restore" and t.get("operator"):
        return (
            f"The Milvus resource `{t['release']}` is deleted. Restore re-creates it from its saved manifest as it was "
            "(Pulsar V2, a fresh Pulsar; the flushed data is in object storage)."
        )
    if cp.kind == "reinstall":
        diff = "\n".join(t.get("diff", [])) or "(no change)"
        return (
            f"{note}Install `{t['release']}` with chart `{t.get('chart')}` *{t.get('version')}* "
            f"(Milvus {t.get('app_version')}); before: chart {t.get('previous_version')} "
            f"(Milvus {t.get('previous_app_version')}).\nValues diff:\n```{diff}```"
        )
    if cp.kind == "restore":
        return (
            f"`{t['release']}` is uninstalled and its {t.get('pvcs')} Pulsar V2 PVCs still exist. "
            f"Restore installs it again with its saved original values (chart {t.get('chart_version')}, Pulsar V2)."
        )
    return note
