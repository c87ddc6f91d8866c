"""E-mail rendering from real change reports: subject, both bodies, attachment, headers, ACS dict."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime
from email import message_from_bytes, policy
from email.message import EmailMessage

from notifier.email_render import render_email, to_acs_message
from notifier.recipients import Recipient
from tests.conftest import real_report as report

SENDER = "Service tags <servicetags@example.org>"
BLOB = "francecentral/347-dab81bdd4390-360-ff598e27cbc2.json"


def render(rep: dict, **kwargs) -> EmailMessage:
    args = {
        "sender": SENDER,
        "recipient": Recipient("net@example.com", "Network team"),
        "message_id": f"{BLOB}|net@example.com",
        "blob_name": BLOB,
    } | kwargs
    return render_email(rep, **args)


def reparse(msg: EmailMessage) -> EmailMessage:
    """The message as a receiver sees it: serialised to bytes and parsed back."""
    parsed = message_from_bytes(msg.as_bytes(), policy=policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def bodies(msg: EmailMessage) -> tuple[str, str]:
    return msg.get_body(("plain",)).get_content(), msg.get_body(("html",)).get_content()


def test_subject_is_the_summary_line_with_region_and_change_numbers():
    msg = reparse(render(report(347, 360, "francecentral")))
    assert msg["Subject"] == (
        "[servicetags] francecentral: 4 changed tags; +14/-12 prefixes; IPv4 +35,888/-12 addresses; "
        "IPv6 +4,722,366,482,869,645,213,696/-0 addresses (change 347 → 360)"
    )
    assert msg["To"] == "Network team <net@example.com>"
    assert msg["From"] == SENDER


def test_structure_is_alternative_text_and_html_plus_json_attachment():
    msg = reparse(render(report(347, 360, "francecentral")))
    assert msg.get_content_type() == "multipart/mixed"
    parts = [p.get_content_type() for p in msg.walk()]
    assert parts == [
        "multipart/mixed",
        "multipart/alternative",
        "text/plain",
        "text/html",
        "application/json",
    ]


def test_both_bodies_list_the_added_prefixes_of_a_specific_tag_with_counts():
    text, html = bodies(reparse(render(report(347, 360, "francecentral"))))
    heading = "AzureCloud.centralfrance [changed] (tag change 74 → 79)"
    tag_section = text.split(heading)[1].split("\n\n")[0] + "\n"
    assert "IPv4 +35,374/-0, IPv6 +4,722,366,482,869,645,213,696/-0" in tag_section
    for prefix in ("20.153.191.0/24", "48.220.0.0/17", "57.157.36.44/31", "2603:1063:70d::/56"):
        assert f"    {prefix}\n" in tag_section
        assert f"<li><code>{prefix}</code></li>" in html
    assert "LogicApps.FranceCentral [changed] (tag change 5 → 6, service LogicApps)" in text
    assert "  removed (12):\n    20.188.33.169/32" in text
    assert "IPv4 +0/-12" in text and "IPv4 +0/-12" in html


def test_net_lists_appear_when_a_reaggregation_makes_them_differ():
    rep = report(340, 341, "australiaeast")  # 40.120.176.160/31 folded into a new /29
    text, html = bodies(reparse(render(rep)))
    assert "  added (2):\n    40.120.176.160/29\n    40.120.176.168/31\n" in text
    assert "  removed (1):\n    40.120.176.160/31\n" in text
    assert "  net added (3):\n    40.120.176.162/31\n    40.120.176.164/30\n    40.120.176.168/31\n" in text
    assert "net removed" not in text
    assert "IPv4 +8/-0" in text
    assert "net added (3):" in html and "<code>40.120.176.164/30</code>" in html


def test_html_has_a_summary_table_with_the_report_totals():
    _, html = bodies(reparse(render(report(340, 341, "all"))))
    assert ">IPv4 addresses</th><td" in html
    assert ">365,685</td><td " in html  # ipv4_addresses_added of the whole cloud, cn340 -> cn341
    assert "Tags changed: 88; metadata only: 0." in html


def test_metadata_changes_are_shown_in_both_bodies():
    rep = report(346, 347, "all")
    tag = next(t for t in rep["tags"] if t["status"] == "metadata")
    key, change = next(iter(tag["metadata_changes"].items()))
    text, _ = bodies(reparse(render(rep)))
    line = f"{key}: {json.dumps(change['from'])} → {json.dumps(change['to'])}"
    assert f"  {line}" in text
    assert f"{tag['id']} [metadata]" in text
    assert "prefixes unchanged" in text


def test_html_escapes_tag_ids_and_services():
    rep = report(347, 360, "francecentral")
    rep["tags"][0]["id"] = "Evil<script>alert(1)</script>&Co"
    rep["tags"][0]["system_service"] = 'Svc"<b>'
    _, html = bodies(reparse(render(rep)))
    assert "<script>" not in html and "<b>" not in html
    assert "Evil&lt;script&gt;alert(1)&lt;/script&gt;&amp;Co" in html
    assert "Svc&quot;&lt;b&gt;" in html


def test_blob_url_is_linked_and_escaped():
    url = "https://acct.blob.core.windows.net/reports/x.json?a=1&b=2"
    text, html = bodies(reparse(render(report(347, 360, "francecentral"), blob_url=url)))
    assert f"Stored report: {url}" in text
    assert 'href="https://acct.blob.core.windows.net/reports/x.json?a=1&amp;b=2"' in html


def test_attachment_parses_back_to_the_same_report():
    rep = report(340, 341, "all")  # IPv6 counts beyond 64 bits must survive
    msg = reparse(render(rep))
    (attachment,) = list(msg.iter_attachments())
    assert attachment.get_filename() == "servicetags-report-all-340-341.json"
    assert attachment.get_content_type() == "application/json"
    assert json.loads(attachment.get_payload(decode=True)) == rep


def test_message_id_is_stable_per_idempotency_key_and_differs_between_keys():
    rep = report(347, 360, "francecentral")
    first, again = render(rep, message_id="k1"), render(rep, message_id="k1")
    other = render(rep, message_id="k2")
    assert first["Message-ID"] == again["Message-ID"] != other["Message-ID"]
    assert first["Message-ID"].startswith("<") and first["Message-ID"].endswith("@example.org>")


def test_servicetags_headers_and_optional_date():
    rep = report(347, 360, "francecentral")
    msg = reparse(render(rep, date=datetime(2025, 6, 22, 10, 0, tzinfo=UTC)))
    assert msg["X-Servicetags-Region"] == "francecentral"
    assert msg["X-Servicetags-Report"] == BLOB
    assert msg["Date"] == "Sun, 22 Jun 2025 10:00:00 +0000"
    assert render(rep)["Date"] is None  # rendering reads no clock


def test_plain_address_recipient_and_no_blob_name():
    msg = render_email(
        report(347, 360, "francecentral"), sender="a@example.org", recipient="ops@example.com", message_id="k"
    )
    assert msg["To"] == "ops@example.com"
    assert msg["X-Servicetags-Report"] is None


def test_acs_message_carries_the_same_content():
    rep = report(347, 360, "francecentral")
    msg = render(rep)
    acs = to_acs_message(msg)
    text, html = bodies(msg)
    assert acs["senderAddress"] == "servicetags@example.org"
    assert acs["recipients"] == {"to": [{"address": "net@example.com", "displayName": "Network team"}]}
    assert acs["content"] == {"subject": str(msg["Subject"]), "plainText": text, "html": html}
    assert acs["content"]["subject"].startswith("[servicetags] francecentral: 4 changed tags")
    (attachment,) = acs["attachments"]
    assert attachment["name"] == "servicetags-report-francecentral-347-360.json"
    assert attachment["contentType"] == "application/json"
    assert json.loads(base64.b64decode(attachment["contentInBase64"])) == rep
    assert acs["headers"] == {
        "X-Servicetags-Region": "francecentral",
        "X-Servicetags-Report": BLOB,
        "X-Servicetags-Message-Id": str(msg["Message-ID"]),
    }
    assert acs["userEngagementTrackingDisabled"] is True
    json.dumps(acs)  # the SDK sends it as JSON


def test_a_new_region_is_said_first_in_subject_and_body():
    from core.render import summary_line
    from core.report import with_region_event
    from notifier.email_render import html_body, plain_text, subject
    from tests.conftest import real_report

    report = with_region_event(real_report(346, 347, "indonesiacentral"), "added")
    assert subject(report).startswith(
        "[servicetags] New region indonesiacentral in Public: 37 tags, "
        "226 prefixes, all added: indonesiacentral:"
    )
    assert plain_text(report).splitlines()[0] == (
        "New region indonesiacentral in Public: 37 tags, 226 prefixes, all added"
    )
    assert "<h1>New region indonesiacentral in Public" in html_body(report)
    ordinary = real_report(346, 347, "francecentral")
    assert subject(ordinary) == f"[servicetags] {summary_line(ordinary)}"
    assert not plain_text(ordinary).startswith("New region")


def test_a_removed_region_is_said_first():
    from core.report import with_region_event
    from notifier.email_render import subject
    from tests.conftest import real_report

    report = with_region_event(real_report(347, 346, "indonesiacentral"), "removed")
    assert subject(report).startswith("[servicetags] Region indonesiacentral removed from Public: 37 tags")


def test_the_impact_of_the_report_is_in_both_bodies_or_said_to_be_pending():
    from core.digest import DigestReport, impact_member
    from core.impact import impact
    from tests.unit.test_impact import fixture_rules

    rep = report(340, 341, "eastus2")
    name = "Public/eastus2/340-341.json"
    doc = impact(rep, fixture_rules().rules, report_name=name)
    plain, html = bodies(reparse(render(rep, impact=impact_member([DigestReport(name, "", rep, doc)]))))
    assert "Impact on your rules: 5 rules touched in 1 of 1 region checked" in plain
    assert (
        "  eastus2: NSG rule nsg-app-westeurope securityRules/AllowStorageEastUS2\n"
        "    destinationAddressPrefix names Storage.EastUS2: gained 20.153.40.0/24, "
        "57.150.250.0/23\n"
    ) in plain
    assert plain.index("Impact on your rules") < plain.index("Storage.EastUS2 [changed]")
    assert "<code>nsg-app-westeurope</code>" in html
    pending = bodies(reparse(render(rep, impact=impact_member([DigestReport(name, "", rep, None)]))))
    assert "Impact on your rules: not yet computed for eastus2" in pending[0]
    assert "Impact on your rules" not in bodies(reparse(render(rep)))[0]
