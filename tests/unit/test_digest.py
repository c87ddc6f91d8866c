"""The run digest and its renderings on real weeks: contract, table, limits, filters, signatures."""

from __future__ import annotations

import base64
import email
import email.policy
import json
import time
from functools import cache

import pytest

from core.change_report import change_report, index_of
from core.digest import DigestReport, build_digest, headline, title, v6_64, worth_sending
from notifier import signing
from notifier.channels import ChannelsError, parse_channels, with_secrets
from notifier.chat_render import slack_payload, teams_payload
from notifier.digest_email import render_digest_email
from notifier.recipients import Recipient, filter_report, parse_recipients
from tests.conftest import _PARSER, real_snapshot

RUN = {"cloud": "Public", "run_id": "20250501T000000Z-abcd1234", "started_at": "2025-05-01T00:00:00+00:00"}


@cache
def _reports(old: int, new: int) -> str:
    """Every changed region's report, a new region marked as the report contract does."""
    a, b = real_snapshot(old), real_snapshot(new)
    index = index_of(a, b)
    new_regions = set(index_of(b).names) - set(index_of(a).names)
    out = []
    for region in [*index.names, "global"]:
        report = change_report(a, b, region=region, parser=_PARSER, index=index)
        if report["tags"]:
            if region in new_regions:
                report["region_event"] = "added"
            out.append(report)
    return json.dumps(out)


def run_reports(old: int, new: int) -> list[DigestReport]:
    return [
        DigestReport(
            f"Public/{r['region']}/x.json",
            f"https://acct.blob.core.windows.net/reports/Public/{r['region']}/x.json",
            r,
        )
        for r in json.loads(_reports(old, new))
    ]


def digest_of(old: int, new: int, *, missing: tuple[str, ...] = (), poisoned: tuple[str, ...] = ()) -> dict:
    reports = run_reports(old, new)
    outcomes = {r.report["region"]: {"status": "changed"} for r in reports}
    outcomes.update({p: {"status": "poisoned", "reason": "unknown region"} for p in poisoned})
    closed_by = "deadline" if missing else "complete"
    return build_digest(RUN, outcomes, list(missing), reports, closed_by=closed_by)


def test_the_digest_of_cn340_to_cn341_names_every_changed_region_and_adds_up():
    reports = run_reports(340, 341)
    digest = digest_of(340, 341)
    assert digest["regions_changed"] == len(reports) == 31
    assert [c["region"] for c in digest["changes"]] == sorted(r.report["region"] for r in reports)
    assert digest["totals"]["prefixes_added"] == sum(r.report["summary"]["prefixes_added"] for r in reports)
    assert digest["totals"]["ipv4_added"] == sum(r.report["summary"]["ipv4_addresses_added"] for r in reports)
    assert digest["totals"]["tags"] == sum(len(r.report["tags"]) for r in reports) == 88
    germany = [r for r in digest["rows"] if r["region"] == "germanywestcentral"]
    assert germany == [
        {
            "region": "germanywestcentral",
            "tag": "AzureCloud.germanywc",
            "status": "changed",
            "prefixes_added": 2,
            "prefixes_removed": 0,
            "ipv4_added": 33280,
            "ipv4_removed": 0,
            "ipv6_added": 0,
            "ipv6_removed": 0,
        }
    ]
    assert worth_sending(digest)


def test_ipv6_sizes_read_in_slash64s():
    assert v6_64(2**64 * 65536) == "65,536"  # a /48
    assert v6_64(2**32) == "<1"  # a /96
    assert v6_64(2**64 * 3 + 2**63) == "3.50"
    line = headline(digest_of(340, 341))[0]
    assert "IPv6 /64s +327,803/-0" in line and "IPv4 addresses +365,685/-8" in line


def test_new_regions_come_first_and_missing_or_poisoned_regions_are_named():
    digest = digest_of(350, 353, missing=("westeurope",), poisoned=("nowhere1",))
    assert [e["region"] for e in digest["region_events"]] == ["chilecentral", "malaysiawest", "southeastus"]
    assert [c["region"] for c in digest["changes"][:3]] == ["chilecentral", "malaysiawest", "southeastus"]
    lines = headline(digest)
    assert lines[:3] == ["New region: chilecentral", "New region: malaysiawest", "New region: southeastus"]
    assert "Not checked by the deadline (1): westeurope" in lines
    assert "Gave up on (poisoned): nowhere1" in lines
    assert digest["closed_by"] == "deadline"
    assert title(digest).startswith(
        "New region chilecentral; New region malaysiawest; New region southeastus. Service tags Public, run "
    )


def test_the_largest_run_fits_teams_and_slack_limits():
    digest = digest_of(350, 353)
    rows = len(digest["rows"])
    assert digest["regions_changed"] == 59 and rows == 263
    teams = teams_payload(digest)
    body = json.dumps(teams, ensure_ascii=False, separators=(",", ":")).encode()
    assert len(body) <= 28 * 1024
    card = teams["attachments"][0]
    assert card["contentType"] == "application/vnd.microsoft.card.adaptive" and card["contentUrl"] is None
    blocks = card["content"]["body"]
    texts = [b["text"] for b in blocks if b["type"] == "TextBlock"]
    assert texts[1] == "New region: chilecentral"
    shown = sum(len(b["facts"]) for b in blocks if b["type"] == "FactSet")
    assert 0 < shown < rows
    assert f"{rows - shown} more tag changes not shown here; they are in the full reports." in texts
    slack = slack_payload(digest)
    # The fallback text (the notification's preview) leads with the new regions.
    assert slack["text"].startswith(
        "New region chilecentral; New region malaysiawest; "
        "New region southeastus. Service tags Public, "
        "run 20250501T000000Z-abcd1234: 59 regions changed"
    )
    assert len(slack["blocks"]) <= 50
    sections = [b["text"]["text"] for b in slack["blocks"] if b["type"] == "section"]
    assert max(len(t) for t in sections) <= 3000
    assert len(json.dumps(slack["blocks"])) <= 13000
    assert sections[0].startswith("New region: chilecentral\nNew region: malaysiawest")
    assert any(t.startswith("*") and "more tag changes not shown here" in t for t in sections)


def test_small_runs_are_shown_whole():
    digest = digest_of(340, 341)
    blocks = teams_payload(digest)["attachments"][0]["content"]["body"]
    assert sum(len(b["facts"]) for b in blocks if b["type"] == "FactSet") == 88
    assert [b["text"] for b in blocks if b.get("weight") == "Bolder" and b["type"] == "TextBlock"][1:] == [
        c["region"] for c in digest["changes"]
    ]
    assert "not shown here" not in json.dumps(blocks)
    germany = next(
        b
        for i, b in enumerate(blocks)
        if b["type"] == "FactSet" and blocks[i - 1]["text"] == "germanywestcentral"
    )
    assert germany["facts"] == [
        {"title": "AzureCloud.germanywc", "value": "prefixes +2/-0 · IPv4 +33,280/-0 · IPv6 /64s +0/-0"}
    ]


def test_the_digest_email_has_text_html_and_the_full_json():
    reports = run_reports(350, 353)
    digest = digest_of(350, 353)
    message = render_digest_email(
        digest,
        reports,
        sender="servicetags@example.com",
        recipient=Recipient("net@example.com", "Network"),
        message_id="run|net",
    )
    parsed = email.message_from_bytes(message.as_bytes(), policy=email.policy.default)
    plain = parsed.get_body(("plain",)).get_content()
    html = parsed.get_body(("html",)).get_content()
    assert plain.splitlines()[2] == "New region: chilecentral"
    assert "IPv6 sizes in /64 networks" in plain and "IPv6 sizes in /64 networks" in html
    assert "more (in the attachment)" in plain
    [attached] = list(parsed.iter_attachments())
    full = json.loads(attached.get_payload(decode=True))
    assert set(full["reports"]) == {r.blob for r in reports}
    total = sum(len(t["added_prefixes"]) for r in full["reports"].values() for t in r["tags"])
    assert total == digest["totals"]["prefixes_added"]


def test_family_services_and_minimum_size_filters():
    report = json.loads(_reports(340, 341))
    by_region = {r["region"]: r for r in report}
    glob = by_region["global"]
    v6 = filter_report(glob, Recipient("a@example.com", family="ipv6"))
    assert v6 is not None
    assert all(":" in p for t in v6["tags"] for p in t["added_prefixes"] + t["removed_prefixes"])
    assert v6["summary"]["ipv4_addresses_added"] == 0 and v6["summary"]["ipv6_addresses_added"] > 0
    v4 = filter_report(glob, Recipient("a@example.com", family="ipv4"))
    assert v4 is not None and v4["summary"]["ipv6_addresses_added"] == 0
    big = filter_report(glob, Recipient("a@example.com", min_addresses=256))
    assert big is not None and all(t["id"] != "ActionGroup" for t in big["tags"])  # ActionGroup: +4
    storage = filter_report(by_region["eastus2"], Recipient("a@example.com", services=("azurestorage",)))
    assert storage is not None and [t["id"] for t in storage["tags"]] == ["Storage.EastUS2"]
    germany = by_region["germanywestcentral"]
    assert filter_report(germany, Recipient("a@example.com", min_addresses=40000)) is None
    [parsed] = parse_recipients(
        '[{"address": "a@example.com", "family": "ipv6", "min_addresses": 10, '
        '"delivery": "report", "services": ["AzureStorage"]}]'
    )
    assert (parsed.family, parsed.min_addresses, parsed.delivery, parsed.services) == (
        "ipv6",
        10,
        "report",
        ("azurestorage",),
    )


def test_channels_name_secrets_and_never_show_their_values():
    [teams, hook] = parse_channels(
        json.dumps(
            [
                {"name": "net", "type": "teams", "url_secret": "teams-net-url", "regions": ["westeurope"]},
                {
                    "name": "cmdb",
                    "type": "webhook",
                    "url_secret": "cmdb-url",
                    "signing_secrets": ["a", "b"],
                    "delivery": "report",
                },
            ]
        )
    )
    assert teams.regions == frozenset({"westeurope"}) and hook.delivery == "report"
    key = "whsec_" + base64.b64encode(b"k" * 32).decode()
    values = {
        "teams-net-url": "https://prod.workflows.example/xyz?sig=SECRET1",
        "cmdb-url": "https://c/x",
        "a": key,
        "b": key,
    }
    [teams, hook] = with_secrets([teams, hook], values.__getitem__)
    assert "SECRET1" not in repr(teams) and key not in repr(hook)
    with pytest.raises(ChannelsError) as caught:
        with_secrets(
            parse_channels('[{"name": "x", "type": "slack", "url_secret": "s"}]'),
            lambda _: "SECRET2-not-a-url",
        )
    assert "SECRET2" not in str(caught.value) and "'s' does not hold an http(s) URL" in str(caught.value)
    for bad, problem in [
        ('[{"name": "x", "type": "fax", "url_secret": "s"}]', "'type' must be one of teams, slack, webhook"),
        ('[{"name": "x", "type": "webhook", "url_secret": "s"}]', "a webhook needs 'signing_secrets'"),
        ('[{"name": "x", "type": "teams", "url_secret": "https://x"}]', "must name a secret"),
        ('[{"name": "x", "type": "teams", "url_secret": "s", "delivery": "weekly"}]', "'delivery' must be"),
    ]:
        with pytest.raises(ChannelsError) as caught:
            parse_channels(bad)
        assert problem in str(caught.value) and str(caught.value).startswith("SERVICETAGS_CHANNELS: ")


def test_signatures_verify_with_the_standard_webhooks_library_also_during_rotation():
    from standardwebhooks.webhooks import Webhook

    old = "whsec_" + base64.b64encode(b"o" * 32).decode()
    new = "whsec_" + base64.b64encode(b"n" * 32).decode()
    body = json.dumps(digest_of(340, 341)).encode()
    now = int(time.time())
    headers = signing.headers([new, old], "msg_0123", now, body)
    for secret in (old, new):
        assert Webhook(secret).verify(body, headers) == json.loads(body)
    assert signing.verify([old], headers, body, now=now) == "msg_0123"
    stranger = "whsec_" + base64.b64encode(b"x" * 32).decode()
    with pytest.raises(Exception):  # noqa: B017 (the library raises its own WebhookVerificationError)
        Webhook(stranger).verify(body, headers)
    with pytest.raises(signing.SignatureError):
        signing.verify([old], {**headers, "webhook-id": "msg_other"}, body, now=now)


def test_the_spec_test_vector():
    # standard-webhooks spec and libraries: this secret, id, timestamp and body sign to this value.
    secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
    payload = b'{"test": 2432232314}'
    assert (
        signing.sign(secret, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, payload)
        == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    )


# ---- the impact section: real reports against the rule fixtures (tests/fixtures/rules/) ---------


@cache
def _impact_docs() -> str:
    from core.impact import impact
    from tests.unit.test_impact import fixture_rules, prefixes_of

    current = prefixes_of(341)
    rules = fixture_rules().rules
    return json.dumps(
        {
            r.blob: impact(r.report, rules, tag_prefixes=current, report_name=r.blob)
            for r in run_reports(340, 341)
        }
    )


def impact_digest(*, pending: tuple[str, ...] = ("eastus",), target: Recipient | None = None) -> dict:
    docs = json.loads(_impact_docs())
    reports = []
    for r in run_reports(340, 341):
        filtered = r.report if target is None else filter_report(r.report, target)
        if filtered is not None:
            reports.append(
                DigestReport(r.blob, r.url, filtered, None if r.report["region"] in pending else docs[r.blob])
            )
    outcomes = {r.report["region"]: {"status": "changed"} for r in reports}
    return build_digest(RUN, outcomes, [], reports, closed_by="complete", with_impact=True)


NSG_EASTUS2 = "eastus2: NSG rule nsg-app-westeurope securityRules/AllowStorageEastUS2"
GAINED_EASTUS2 = "destinationAddressPrefix names Storage.EastUS2: gained 20.153.40.0/24, 57.150.250.0/23"


def test_the_digest_contract_carries_each_reports_impact_or_says_it_is_pending():
    digest = impact_digest()
    member = digest["impact"]
    assert member["pending"] == ["eastus"]
    by_region = {e["region"]: e for e in member["reports"]}
    assert set(by_region) == {c["region"] for c in digest["changes"]}
    assert by_region["eastus"] == {"region": "eastus", "report": "Public/eastus/x.json", "state": "pending"}
    east2 = by_region["eastus2"]
    assert east2["state"] == "computed" and east2["summary"]["rules_checked"] == 57
    assert east2["summary"]["rules_affected"] == 5 and east2["more"] == 0
    nsg = next(i for i in east2["items"] if i["rule"] == "securityRules/AllowStorageEastUS2")
    assert nsg["resource"] == "nsg-app-westeurope" and nsg["lines"] == [GAINED_EASTUS2]
    assert (
        member["rules_affected"]
        == sum(e["summary"]["rules_affected"] for e in by_region.values() if e["state"] == "computed")
        == 20
    )
    # A report no rule is touched by is computed, with nothing in it: no false positive.
    quiet = by_region["australiaeast"]
    assert quiet["summary"]["rules_affected"] == 0 and not quiet["items"]
    # The webhook body is the digest itself (Digests.post): the member travels as is.
    assert json.loads(json.dumps(digest, ensure_ascii=False))["impact"] == member
    # Without the impact step deployed, no member at all: the contract is as before.
    assert "impact" not in digest_of(340, 341)


def test_a_recipients_filters_apply_to_the_impact_too():
    # Storage tags only: the rules touched through AzureCloud (global, westeurope) are not theirs.
    member = impact_digest(target=Recipient("s@example.com", tags=("storage*",)))["impact"]
    touched = {
        e["region"]: e["summary"]["rules_affected"]
        for e in member["reports"]
        if e["state"] == "computed" and e["summary"]["rules_affected"]
    }
    assert touched == {"eastus2": 5, "israelcentral": 2} and member["rules_affected"] == 7
    east2 = next(e for e in member["reports"] if e["region"] == "eastus2")
    # The key vault rule is touched through AzureCloud.eastus2 and Storage.EastUS2: it stays.
    assert {i["resource"]: i["tags"] for i in east2["items"]}["kv-app"] == [
        "AzureCloud.eastus2",
        "Storage.EastUS2",
    ]


def test_the_digest_e_mail_shows_the_impact_in_both_bodies():
    digest = impact_digest()
    msg = render_digest_email(
        digest,
        run_reports(340, 341),
        sender="s@example.org",
        recipient=Recipient("net@example.com"),
        message_id="m",
    )
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    plain = parsed.get_body(("plain",)).get_content()
    html = parsed.get_body(("html",)).get_content()
    head = "Impact on your rules: 20 rules touched in 4 of 30 regions checked; not yet computed for eastus"
    assert head in plain
    assert f"  {NSG_EASTUS2}\n    {GAINED_EASTUS2}\n" in plain
    # Before the long prefix lists, after the table.
    assert plain.index(head) < plain.index("== australiaeast (change")
    assert "<h3>Impact on your rules</h3>" in html and "<code>nsg-app-westeurope</code>" in html
    assert "not yet computed for eastus" in html
    attached = json.loads(next(p for p in parsed.iter_attachments()).get_content())
    assert attached["impact"]["rules_affected"] == 20


def test_teams_and_slack_show_the_impact_within_their_limits_and_fold_the_rest():
    digest = impact_digest()
    card = teams_payload(digest)["attachments"][0]["content"]
    [section] = [b for b in card["body"] if b["type"] == "Container"]
    texts = [b["text"] for b in section["items"]]
    assert texts[0].startswith("Impact on your rules: 20 rules touched")
    assert f"**{NSG_EASTUS2}**\n- {GAINED_EASTUS2}" in texts
    slack = slack_payload(digest)
    joined = "\n".join(b["text"]["text"] for b in slack["blocks"] if b["type"] == "section")
    assert f"*{NSG_EASTUS2}*\n• {GAINED_EASTUS2}" in joined
    assert "Impact on your rules: 20 rules touched" in slack["text"]
    # Tight limits: the section folds and says how many rules it left out.
    small = teams_payload(digest, max_bytes=7000)
    assert len(json.dumps(small, separators=(",", ":")).encode()) <= 7000
    [folded] = [b for b in small["attachments"][0]["content"]["body"] if b["type"] == "Container"]
    shown = len(folded["items"]) - 1 - 4 - 1  # the heading, 4 region lines, the fold note
    assert folded["items"][-1]["text"] == f"{20 - shown} more affected rules not shown here."
    few = slack_payload(digest, max_blocks=8)
    assert len(few["blocks"]) == 8
    notes = [e["text"] for b in few["blocks"] if b["type"] == "context" for e in b["elements"]]
    assert notes[-1] == "4 more affected rules not shown here."
    assert sum(len(json.dumps(b)) for b in slack_payload(digest)["blocks"]) < 12000


def test_an_unreadable_impact_document_counts_as_not_computed():
    from notifier.digest_delivery import read_impacts
    from runtime.adapters.memory import MemoryBlobStore

    store = MemoryBlobStore()
    docs = json.loads(_impact_docs())
    store.create("Public/eastus2/x.json", json.dumps(docs["Public/eastus2/x.json"]).encode())
    store.create("Public/westeurope/x.json", b'{"affected": [{"rule": "r"}], "summary": {}}')
    store.create("Public/global/x.json", b"not json")
    names = [f"Public/{r}/x.json" for r in ("eastus2", "westeurope", "global", "eastus")]
    found = read_impacts(store, names)
    assert list(found) == ["Public/eastus2/x.json"]
    assert found["Public/eastus2/x.json"]["summary"]["rules_affected"] == 5
    assert read_impacts(None, names) == {}
