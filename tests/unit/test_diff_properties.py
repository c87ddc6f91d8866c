"""Properties of the diff engine, checked against an independent address-set model."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from common.compare import compare
from common.prefixes import PrefixParser
from common.snapshot import snapshot_from_document

# Small address spaces, so the oracle can enumerate every address.
V4_BASE = int(ipaddress.IPv4Address("10.1.0.0"))
V6_BASE = int(ipaddress.IPv6Address("2001:db8::"))


@st.composite
def prefixes(draw: st.DrawFn) -> str:
    if draw(st.booleans()):
        length = draw(st.integers(24, 32))
        offset = draw(st.integers(0, 1023)) & ~((1 << (32 - length)) - 1)
        return str(ipaddress.IPv4Network((V4_BASE + offset, length)))
    length = draw(st.integers(118, 128))
    offset = draw(st.integers(0, 1023)) & ~((1 << (128 - length)) - 1)
    return str(ipaddress.IPv6Network((V6_BASE + offset, length)))


TAG_IDS = ["AzureCloud.westeurope", "Storage", "Sql.EastUS", "AzureCloud"]
tag_sets = st.dictionaries(st.sampled_from(TAG_IDS), st.frozensets(prefixes(), max_size=8),
                           max_size=4)


def document(tags: dict[str, frozenset[str]], change_number: int = 1) -> dict:
    return {"changeNumber": change_number, "cloud": "Public", "values": [
        {"name": tag_id, "id": tag_id, "properties": {
            "changeNumber": 1, "region": "", "systemService": "", "addressPrefixes": sorted(p)}}
        for tag_id, p in tags.items()]}


def diff(old: dict[str, frozenset[str]], new: dict[str, frozenset[str]]) -> dict:
    parser = PrefixParser()
    a = snapshot_from_document(document(old, 1), "old", parser)
    b = snapshot_from_document(document(new, 2), "new", parser)
    return compare(a, b, parser=parser)


def addresses(prefix_list: list[str] | frozenset[str]) -> set[int]:
    out: set[int] = set()
    for p in prefix_list:
        net = ipaddress.ip_network(p)
        start = int(net.network_address) + (0 if net.version == 4 else 1 << 200)
        out.update(range(start, start + net.num_addresses))
    return out


@settings(max_examples=150, deadline=None)
@given(tag_sets)
def test_a_snapshot_diffed_with_itself_is_empty(tags):
    assert diff(tags, tags)["tags"] == []


@settings(max_examples=150, deadline=None)
@given(tag_sets, tag_sets)
def test_applying_the_reported_prefix_changes_to_old_gives_new(old, new):
    result = {k: set(v) for k, v in old.items()}
    for entry in diff(old, new)["tags"]:
        if entry["status"] == "removed":
            del result[entry["id"]]
            continue
        current = result.setdefault(entry["id"], set())
        current -= set(entry["removed_prefixes"])
        current |= set(entry["added_prefixes"])
    assert result == {k: set(v) for k, v in new.items()}


@settings(max_examples=150, deadline=None)
@given(tag_sets, tag_sets)
def test_net_change_equals_the_address_set_difference(old, new):
    report = diff(old, new)
    for entry in report["tags"]:
        before = addresses(old.get(entry["id"], frozenset()))
        after = addresses(new.get(entry["id"], frozenset()))
        assert addresses(entry["net_added"]) == after - before
        assert addresses(entry["net_removed"]) == before - after
        for key in ("net_added", "net_removed"):
            nets = [ipaddress.ip_network(p) for p in entry[key]]
            collapsed = [*ipaddress.collapse_addresses(n for n in nets if n.version == 4),
                         *ipaddress.collapse_addresses(n for n in nets if n.version == 6)]
            assert nets == collapsed, "net lists are minimal CIDR blocks in address order"
    v4_added = sum(len(addresses(e["net_added"]) - {a for a in addresses(e["net_added"])
                   if a >= 1 << 200}) for e in report["tags"])
    assert report["summary"]["ipv4_addresses_added"] == v4_added


@settings(max_examples=100, deadline=None)
@given(prefixes().filter(lambda p: not p.endswith(("/32", "/128"))))
def test_splitting_a_prefix_into_halves_changes_prefixes_but_not_coverage(prefix):
    halves = frozenset(str(n) for n in ipaddress.ip_network(prefix).subnets())
    entry = diff({"Storage": frozenset({prefix})}, {"Storage": halves})["tags"][0]
    assert entry["status"] == "changed"
    assert entry["removed_prefixes"] == [prefix]
    assert sorted(entry["added_prefixes"]) == sorted(halves)
    assert entry["net_added"] == [] and entry["net_removed"] == []
