"""The typed upgrade record: per-path state, its JSON round trip, and records of older bots.

An upgrade can be under way while the bot itself is upgraded: a record written by a bot that
kept every fact as a string key of one ``facts`` dict must load into the typed state with each
value where it lives now, so the new bot carries on from the same point.
"""

from __future__ import annotations

import json

import pytest

from state.model import Facts, HelmState, OperatorState, Upgrade, assign_facts


def _upgrade() -> Upgrade:
    return Upgrade(id="u1", release="my-release", namespace="default", channel="C1", started_by="U1")


def test_typed_state_round_trips_through_json() -> None:
    u = _upgrade()
    assign_facts(u, {"databases": {"default": ["books"]}, "uninstalled": 12.5, "cr_deleted": "gone"})
    u.facts.deadlines["wait"] = {"attempt": 0, "at": 99.0}
    back = Upgrade.from_json(u.to_json())
    assert back.facts.databases == {"default": ["books"]}
    assert back.facts.deadlines == {"wait": {"attempt": 0, "at": 99.0}}
    assert back.helm.uninstalled == 12.5
    assert back.operator.cr_deleted == "gone"
    assert back == u


def test_a_record_of_a_bot_before_typed_state_loads_each_fact_where_it_lives_now() -> None:
    legacy = json.loads(_upgrade().to_json())
    for key in ("helm", "operator"):
        del legacy[key]
    legacy["facts"] = {
        "release": {"chart_version": "4.2.40"},
        "databases": {"default": ["books"]},
        "pvcs": [{"name": "data-0", "uid": "u-0"}],
        "backup_secret": "my-release-pulsar-upgrade-backup",
        "retries": [{"step": "reinstall", "by": "U2", "at": 3.0}],
        "open_error": {"step": "reinstall", "reason": "x", "key": "err:reinstall:0"},
        "helm_running": {"step": "reinstall", "command": "install", "at": 4.0},
        "uninstalled": 5.0,
        "pvc_delete_started": 6.0,
        "reinstall_plan": {"chart": "milvus", "version": "4.2.40"},
        "kept_pvcs": [{"name": "etcd-0", "uid": "u-e"}],
        "cr_delete_started": 7.0,
        "wait_deadline": {"attempt": 1, "at": 8.0},
        "something_retired": True,  # a key no longer used is dropped, not carried
    }
    u = Upgrade.from_json(json.dumps(legacy))
    assert u.facts == Facts(
        release={"chart_version": "4.2.40"},
        databases={"default": ["books"]},
        pvcs=[{"name": "data-0", "uid": "u-0"}],
        backup_secret="my-release-pulsar-upgrade-backup",
        retries=[{"step": "reinstall", "by": "U2", "at": 3.0}],
        open_error={"step": "reinstall", "reason": "x", "key": "err:reinstall:0"},
        deadlines={"wait": {"attempt": 1, "at": 8.0}},
    )
    assert u.helm == HelmState(
        reinstall_plan={"chart": "milvus", "version": "4.2.40"},
        helm_running={"step": "reinstall", "command": "install", "at": 4.0},
        uninstalled=5.0,
        pvc_delete_started=6.0,
    )
    assert u.operator == OperatorState(kept_pvcs=[{"name": "etcd-0", "uid": "u-e"}], cr_delete_started=7.0)


def test_an_unknown_fact_is_refused_and_nothing_is_set() -> None:
    u = _upgrade()
    with pytest.raises(TypeError, match="no such fact: uninstaled"):
        assign_facts(u, {"uninstalled": 1.0, "uninstaled": 2.0})
    assert u.helm.uninstalled is None
