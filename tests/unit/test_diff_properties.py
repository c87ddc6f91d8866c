"""Properties of the diff engine, checked against an independent address-set model."""

from __future__ import annotations

import ipaddress

from hypothesis import given, settings
from hypothesis import strategies as st

from core.change_report import change_report
from core.prefixes import PrefixParser
from core.snapshot import snapshot_from_document

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
tag_sets = st.dictionaries(st.sampled_from(TAG_IDS), st.frozensets(prefixes(), max_size=8), max_size=4)


def document(tags: dict[str, frozenset[str]], change_number: int = 1) -> dict:
    return {
        "changeNumber": change_number,
        "cloud": "Public",
        "values": [
            {
                "name": tag_id,
                "id": tag_id,
                "properties": {
                    "changeNumber": 1,
                    "region": "",
                    "systemService": "",
                    "addressPrefixes": sorted(p),
                },
            }
            for tag_id, p in tags.items()
        ],
    }


def diff(old: dict[str, frozenset[str]], new: dict[str, frozenset[str]]) -> dict:
    parser = PrefixParser()
    a = snapshot_from_document(document(old, 1), "old", parser)
    b = snapshot_from_document(document(new, 2), "new", parser)
    return change_report(a, b, parser=parser)


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
            collapsed = [
                *ipaddress.collapse_addresses(n for n in nets if n.version == 4),
                *ipaddress.collapse_addresses(n for n in nets if n.version == 6),
            ]
            assert nets == collapsed, "net lists are minimal CIDR blocks in address order"
    v4_added = sum(
        len(addresses(e["net_added"]) - {a for a in addresses(e["net_added"]) if a >= 1 << 200})
        for e in report["tags"]
    )
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


# Candidates for coverage: the big tags' prefixes that may overlap a change are found by
# text stems and supernet names, not by computing every range. Never miss one.
@st.composite
def spread_prefixes(draw: st.DrawFn) -> str:
    """Prefixes of every length, around octet and hextet boundaries (where stems change)."""
    if draw(st.booleans()):
        length = draw(st.integers(0, 32))
        base = draw(st.sampled_from([0x0A000000, 0x0AFF0000, 0x14240100, 0xC0A8FF00, 0xFFFFFF00]))
        network = (base + draw(st.integers(-4096, 4096))) % (1 << 32)
        return str(ipaddress.IPv4Network((network >> (32 - length) << (32 - length), length)))
    length = draw(st.integers(0, 128))
    base = draw(st.sampled_from([0x2603_1000 << 96, 0x2603_0000 << 96, 0x0000_0001 << 96, 0x2A01_0111 << 96]))
    network = (base + (draw(st.integers(-(1 << 100), 1 << 100)))) % (1 << 128)
    return str(ipaddress.IPv6Network((network >> (128 - length) << (128 - length), length)))


@settings(max_examples=150, deadline=None)
@given(
    st.frozensets(spread_prefixes(), min_size=1, max_size=40),
    st.lists(spread_prefixes(), min_size=1, max_size=6),
    st.sampled_from([0, 100]),
)
def test_coverage_candidates_include_every_overlapping_prefix(texts, changed, scan):
    from core import coverage

    parser = PrefixParser()
    ranges = [parser.range(p) for p in changed]
    targets = {v: coverage.merged(ranges, v) for v in (4, 6)}
    old_scan = coverage._SCAN
    coverage._SCAN = scan  # both ways of searching: one pass over the texts, and sort and bisect
    try:
        found = coverage.candidates(texts, targets, direct=0)
    finally:
        coverage._SCAN = old_scan
    overlapping = {p for p in texts if coverage.overlapping([parser.range(p)], targets)}
    assert overlapping <= set(found)


@settings(max_examples=150, deadline=None)
@given(spread_prefixes())
def test_supernet_names_are_the_canonical_text(prefix):
    from core import coverage
    from core.prefixes import format_prefix

    net = ipaddress.ip_network(prefix)
    version, network, length = net.version, int(net.network_address), net.prefixlen
    if version == 6 and length > 32:
        network, length = network >> 96 << 96, 32
    name = coverage._name4 if version == 4 else coverage._name6
    assert name(network, length) == format_prefix(version, network, length)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=5), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=150, deadline=None)
@given(json_values)
def test_the_json_rendering_is_json_dumps_with_an_indent_of_two(value):
    import json

    from core.render import to_json

    assert to_json(value) == json.dumps(value, indent=2, ensure_ascii=False) + "\n"
