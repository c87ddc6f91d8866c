"""The history index against a brute-force model: random nested prefixes over a few changes."""

from __future__ import annotations

import ipaddress
import random

import pytest

from core.history_index import Builder, Index, QueryError, parse_block

CHANGES = ["10", "11", "12", "13"]


def _random_history(seed: int) -> tuple[dict[str, list[set[str]]], Index]:
    """tag -> its prefix set at each change, and the index built from the same changes."""
    rng = random.Random(seed)
    pool = []
    for _ in range(60):
        if rng.random() < 0.8:
            length = rng.choice([8, 12, 16, 20, 24, 28, 32])
            value = rng.choice([10, 20, 40]) << 24 | rng.getrandbits(24)
            pool.append(str(ipaddress.IPv4Network((value, length), strict=False)))
        else:
            length = rng.choice([32, 44, 48, 64, 128])
            value = 0x2603 << 112 | rng.getrandbits(100) << 12
            pool.append(str(ipaddress.IPv6Network((value, length), strict=False)))
    pool = sorted(set(pool))
    states: dict[str, list[set[str]]] = {}
    for tag in ("A", "B.eastus", "C"):
        current = set(rng.sample(pool, 15))
        states[tag] = [set(current)]
        for _ in CHANGES[1:]:
            current = (current - set(rng.sample(sorted(current), 3))) | set(rng.sample(pool, 3))
            states[tag].append(set(current))
    b = Builder("Public")
    b.baseline(
        region="r", change_number=CHANGES[0], sha256="s0", tags=((t, "svc", states[t][0]) for t in states)
    )
    for i in range(1, len(CHANGES)):
        report = {
            "region": "r",
            "from": {"changeNumber": CHANGES[i - 1], "sha256": f"s{i - 1}"},
            "to": {"changeNumber": CHANGES[i], "sha256": f"s{i}"},
            "summary": {},
            "tags": [
                {
                    "id": t,
                    "system_service": "svc",
                    "added_prefixes": sorted(states[t][i] - states[t][i - 1]),
                    "removed_prefixes": sorted(states[t][i - 1] - states[t][i]),
                }
                for t in states
            ],
        }
        b.apply_report(f"Public/r/{CHANGES[i - 1]}-{CHANGES[i]}_a_b.json", report)
    for cn in CHANGES:
        b.set_date(cn, f"2025-01-{cn}")
    return states, Index.from_bytes(b.to_bytes())


def _overlaps(prefix: str, query: ipaddress.IPv4Network | ipaddress.IPv6Network) -> bool:
    net = ipaddress.ip_network(prefix)
    return net.version == query.version and net.overlaps(query)


@pytest.mark.parametrize("seed", range(6))
def test_lookups_agree_with_brute_force_at_every_change(seed):
    states, index = _random_history(seed)
    rng = random.Random(seed + 100)
    every = sorted({p for history in states.values() for state in history for p in state})
    probes = [
        str(ipaddress.ip_network(p)[rng.randrange(min(ipaddress.ip_network(p).num_addresses, 1 << 30))])
        for p in every
    ]
    probes += [*every[:20], "10.0.0.0/8", "20.0.0.0/6", "2603::/16", "1.2.3.4"]
    for at, cn in enumerate(CHANGES):
        for probe in probes:
            query = ipaddress.ip_network(probe, strict=False)
            expected = {(t, p) for t, history in states.items() for p in history[at] if _overlaps(p, query)}
            got = {(h.tag, h.prefix) for h in index.lookup(probe, at=at)}
            assert got == expected, (probe, cn)


@pytest.mark.parametrize("seed", range(3))
def test_since_is_the_start_of_the_current_stay_and_history_lists_every_change(seed):
    states, index = _random_history(seed)
    for tag, history in states.items():
        for prefix in history[-1]:
            start = len(CHANGES) - 1
            while start > 0 and prefix in history[start - 1]:
                start -= 1
            hits = [h for h in index.lookup(prefix) if h.tag == tag and h.prefix == prefix]
            assert len(hits) == 1
            assert hits[0].since_change == CHANGES[start]
            assert (hits[0].since_report is None) == (start == 0)
        events = [(e.kind, e.change_number, e.prefix) for e in index.history(tag.lower())]
        expected = [("joined", CHANGES[0], p) for p in history[0]]
        for i in range(1, len(CHANGES)):
            expected += [("left", CHANGES[i], p) for p in history[i - 1] - history[i]]
            expected += [("joined", CHANGES[i], p) for p in history[i] - history[i - 1]]
        assert sorted(events) == sorted(expected)


def test_the_builder_read_back_from_an_index_writes_the_same_bytes():
    _, index = _random_history(1)
    data = Builder.from_index(index).to_bytes()
    assert Index.from_bytes(data).changes == index.changes
    assert Builder.from_index(Index.from_bytes(data)).to_bytes() == data


def test_queries_are_parsed_strictly():
    assert parse_block("20.20.64.130") == (4, 0x14144082, 32)
    assert parse_block("20.20.64.130/24") == (4, 0x14144000, 24)  # host bits cleared
    assert parse_block("2603:1000::/40")[2] == 40
    for bad in ("20.20.64", "1.2.3.4/33", "2603::1::2", "", "tag"):
        with pytest.raises(QueryError):
            parse_block(bad)
