"""The region lifecycle's decisions, as pure functions over plain data."""

from __future__ import annotations

from core.lifecycle import (
    EMPTY_SHA256,
    Decision,
    after_discovery,
    after_retirement,
    decide,
    is_retired,
    new_region_since,
)

STATE = {"sha256": "a" * 64, "changeNumber": "350", "location_change_number": "353"}


def test_decisions_for_a_region_in_the_reply():
    kw = {"present": True, "cloud": None, "region": "francecentral"}
    assert decide(state=None, sha256="b" * 64, change_number="354", **kw) == Decision("baseline")
    assert decide(state=STATE, sha256="a" * 64, change_number="354", **kw) == Decision("unchanged")
    assert decide(state=STATE, sha256="b" * 64, change_number="353", **kw) == Decision("changed", "state")
    # Older than the newest number the region saw (its location's), whatever the content.
    assert decide(state=STATE, sha256="b" * 64, change_number="352", **kw) == Decision("stale")
    retired = {**STATE, "sha256": EMPTY_SHA256, "retired": {"since": "t", "change_number": "353"}}
    assert decide(state=retired, sha256="b" * 64, change_number="360", **kw) == Decision(
        "added", "state", region_event="added"
    )


def test_decisions_for_a_region_missing_from_the_reply():
    kw = {"present": False, "sha256": EMPTY_SHA256, "cloud": None, "region": "austriaeast"}
    assert decide(state=None, change_number="360", **kw) is None  # unknown: poison
    removed = Decision("removed", "state", region_event="removed")
    assert decide(state=STATE, change_number="354", **kw) == removed
    assert decide(state=STATE, change_number="353", **kw) == Decision("stale")  # as old: a lagging location
    assert decide(state=STATE, change_number="346", **kw) == Decision("stale")
    retired = {**STATE, "retired": {"since": "t"}}
    assert decide(state=retired, change_number="360", **kw) == Decision("retired")


def test_a_new_region_is_new_only_once_the_cloud_is_watched():
    assert new_region_since(None, "indonesiacentral") is None
    cloud, new = after_discovery(None, ["francecentral", "japaneast"], "346", "t0")
    assert new == ["francecentral", "japaneast"] and cloud["watched_since"] == "t0"
    assert new_region_since(cloud, "francecentral") is None  # baseline
    assert new_region_since(cloud, "indonesiacentral") == "346"  # seen before discovery recorded it
    later, new = after_discovery(cloud, ["francecentral", "indonesiacentral", "japaneast"], "347", "t1")
    assert new == ["indonesiacentral"]
    assert later["first_seen"]["indonesiacentral"] == {
        "change_number": "347",
        "at": "t1",
        "baseline": False,
        "absent_in": "346",
    }
    assert new_region_since(later, "indonesiacentral") == "346"
    assert decide(
        state=None, present=True, sha256="c" * 64, change_number="347", cloud=later, region="indonesiacentral"
    ) == Decision("added", "empty", "346", "added")


def test_an_older_reply_neither_adds_nor_brings_back_a_region():
    cloud, _ = after_discovery(None, ["austriaeast", "francecentral"], "361", "t0")
    retired = after_retirement(cloud, "austriaeast", since="t1", change_number="362", report="r")
    assert is_retired(retired, "austriaeast") and retired["regions"] == ["francecentral"]
    again = after_retirement(retired, "austriaeast", since="t2", change_number="363", report=None)
    assert again["retired"] == retired["retired"]  # repeatable: the first retirement stands
    names = ["austriaeast", "francecentral"]
    rolled, new = after_discovery({**retired, "change_number": "362"}, names, "346", "t3")
    assert new == [] and is_retired(rolled, "austriaeast")
    back, new = after_discovery({**retired, "change_number": "362"}, names, "364", "t4")
    assert new == ["austriaeast"] and not is_retired(back, "austriaeast")
    assert back["first_seen"]["austriaeast"]["absent_in"] == "362"
