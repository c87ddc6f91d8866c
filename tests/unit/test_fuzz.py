"""The fuzz tier (issue 16): structured garbage into every parser of outside input.

The property everywhere: a correct result, or an error of the documented kind
(SnapshotError for files and replies, BadMessage or NotAReportEvent for messages and events,
a 4xx for a webhook request, ConfigError for a setting), never another exception type, never
a hang (pytest-timeout), never unbounded memory (inputs and reads are bounded; see
test_hostile_input.py for the limits themselves).

The budget per property is SERVICETAGS_FUZZ_EXAMPLES (default 50, about five seconds in all);
`python3 bench/fuzz.py` runs the same properties with a much larger one.
"""

from __future__ import annotations

import base64
import gzip
import io
import json
import os
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.change_report import change_report
from core.errors import BadMessage, ServiceTagsError, SnapshotError
from core.json_input import JsonInputError, load_json
from core.messages import RegionMessage, parse_region_message
from core.prefixes import PrefixParser
from core.render import RENDERERS
from core.snapshot import parse_snapshot
from notifier.events import NotAReportEvent, ReportEvent, parse_queue_message, parse_webhook_body
from notifier.webhook import EntraTokenAuth, SharedSecretAuth, WebhookApp
from runtime.config import ConfigError, Env

EXAMPLES = int(os.environ.get("SERVICETAGS_FUZZ_EXAMPLES", "50"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=EXAMPLES <= 100,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# A hang fails the test; the long budget of bench/fuzz.py gets proportionally longer.
pytestmark = pytest.mark.timeout(max(300, EXAMPLES // 2))
# Hypothesis raises the recursion limit while a test runs, so nesting a few thousand deep (all
# a 4 KB region message can hold) decodes here where it would not in a worker: that case is in
# test_hostile_input.py; the documents here nest 50,000 deep.

# --- building blocks ---------------------------------------------------------------------

# Text with what breaks naive code: control characters, lone surrogates, huge digit runs.
nasty_text = st.one_of(
    st.text(max_size=20),
    st.sampled_from(
        [
            "",
            " ",
            "\n",
            "\ud800",
            "a\udc00b",
            "\x00",
            "\u202e",
            "all",
            "global",
            "westeurope",
            "10.0.0.0/8",
            "fe80::%eth0/64",
            "9" * 5000,
            "NaN",
            "../../etc",
            "%2e%2e",
        ]
    ),
)
json_scalars = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), nasty_text)
json_values = st.recursive(
    json_scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(nasty_text, inner, max_size=4)),
    max_leaves=12,
)


def maybe(valid: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Mostly the valid value, sometimes garbage, sometimes missing (see `present`)."""
    return st.one_of(valid, valid, valid, json_values)


@st.composite
def prefixes(draw: st.DrawFn) -> Any:
    kind = draw(st.integers(0, 9))
    if kind <= 3:
        return f"10.{draw(st.integers(0, 255))}.{draw(st.integers(0, 255))}.0/24"
    if kind <= 5:
        return f"2603:10{draw(st.integers(0, 99)):02d}:{draw(st.integers(0, 65535)):x}::/48"
    return draw(
        st.one_of(
            st.sampled_from(
                [
                    "10.0.0.1/8",
                    "1.2.3.4/33",
                    "FE80::/64",
                    "fe80::%eth0/64",
                    "010.0.0.0/8",
                    "::ffff:1.2.3.4/128",
                    "1.2.3.4",
                    "/",
                    "",
                    "10.0.0.0/-1",
                    "10.0.0.0/08",
                ]
            ),
            json_values,
        )
    )


def present(draw: st.DrawFn, doc: dict[str, Any], key: str, value: Any) -> None:
    if draw(st.integers(0, 9)):  # one in ten: the key is missing
        doc[key] = value


@st.composite
def tags(draw: st.DrawFn) -> Any:
    if not draw(st.integers(0, 14)):
        return draw(json_values)
    tag_id = draw(maybe(st.sampled_from(["AzureCloud.westeurope", "Storage", "Sql.EastUS", "AzureCloud"])))
    props: dict[str, Any] = {}
    present(draw, props, "changeNumber", draw(maybe(st.one_of(st.integers(1, 99), st.just("3")))))
    present(draw, props, "region", draw(maybe(st.sampled_from(["", "westeurope", "germanywc", "eastus"]))))
    present(draw, props, "systemService", draw(maybe(st.sampled_from(["", "AzureStorage"]))))
    present(draw, props, "addressPrefixes", draw(maybe(st.lists(prefixes(), max_size=6))))
    if draw(st.booleans()):
        props["networkFeatures"] = draw(maybe(st.lists(st.sampled_from(["API", "NSG", "UDR"]), max_size=3)))
    tag: dict[str, Any] = {}
    present(draw, tag, "name", tag_id if draw(st.booleans()) else draw(maybe(st.just("X"))))
    present(draw, tag, "id", tag_id)
    present(draw, tag, "properties", props if draw(st.integers(0, 9)) else draw(json_values))
    return tag


@st.composite
def snapshot_documents(draw: st.DrawFn) -> Any:
    """The download file's shape (integer changeNumber) or the ARM reply's (strings, and the
    reply's own id, name and type fields)."""
    if not draw(st.integers(0, 19)):
        return draw(json_values)
    arm = draw(st.booleans())
    doc: dict[str, Any] = {}
    present(draw, doc, "changeNumber", draw(maybe(st.just("61") if arm else st.integers(1, 500))))
    present(draw, doc, "cloud", draw(maybe(st.sampled_from(["Public", "AzureGovernment"]))))
    present(draw, doc, "values", draw(st.one_of(st.lists(tags(), max_size=5), json_values)))
    if arm:
        doc.update(
            id="/subscriptions/x/providers/Microsoft.Network/serviceTags/Public",
            name="Public",
            type="Microsoft.Network/serviceTags",
        )
    return doc


def encodings(doc: Any) -> st.SearchStrategy[bytes]:
    """The document as bytes: JSON (NaN allowed, so parsers see it), gzipped, or mangled."""
    text = json.dumps(doc, allow_nan=True)
    return st.one_of(
        st.just(text.encode("utf-8", "surrogatepass")),
        st.just(text.encode()),
        st.builds(lambda cut: text.encode()[:cut], st.integers(0, len(text))),
        st.builds(
            lambda at, junk: text.encode()[:at] + junk + text.encode()[at:],
            st.integers(0, len(text)),
            st.binary(min_size=1, max_size=8),
        ),
        st.just(gzip.compress(text.encode())),
        st.builds(lambda cut: gzip.compress(text.encode())[:cut], st.integers(0, 40)),
        # What json.dumps cannot write: numbers past the digit limit, nesting past the recursion limit.
        st.builds(lambda at: (text[:at] + " 1" + "0" * 5000 + text[at:]).encode(), st.integers(0, len(text))),
        st.just(("[" * 50_000 + text + "]" * 50_000).encode()),
    )


# --- snapshot files and replies ----------------------------------------------------------


@FUZZ
@given(snapshot_documents().flatmap(encodings))
def test_snapshot_bytes_parse_or_are_a_snapshot_error(data):
    try:
        snapshot = parse_snapshot(data, "fuzz.json")
    except SnapshotError as exc:
        assert str(exc).startswith("fuzz.json: ")
        str(exc).encode("utf-8")  # printable as one line on stderr
        return
    for tag in snapshot.tags.values():
        assert isinstance(tag.id, str) and isinstance(tag.name, str)
        assert all(isinstance(p, str) for p in tag.prefixes)


# Prefixes a parser may take or refuse, all strings, so whole documents often get to the diff.
plausible_prefixes = st.one_of(
    prefixes().filter(lambda p: isinstance(p, str) and p.startswith(("10.", "2603:"))),
    st.sampled_from(
        [
            "FE80::/64",
            "fe80::%eth0/64",
            "fe80::1%1/128",
            "2001:DB8::/32",
            "2001:0db8::/32",
            "::ffff:1.2.3.4/128",
            "10.0.0.0/08",
            "1.2.3.4/33",
            "0.0.0.0/0",
            "::/0",
        ]
    ),
)


@st.composite
def document_pairs(draw: st.DrawFn) -> tuple[Any, Any]:
    """Two well-shaped documents a week apart: the same tags, some of their prefixes changed
    (odd ones among them), names and regions sometimes odd, so most pairs get to the diff."""
    ids = draw(
        st.lists(
            st.sampled_from(
                [
                    "AzureCloud.westeurope",
                    "Storage",
                    "Sql.EastUS",
                    "AzureCloud",
                    "AzureCloud.germanywestcentral",
                ]
            ),
            min_size=1,
            max_size=4,
            unique=True,
        )
    )

    def tag(tag_id: str) -> dict[str, Any]:
        region = tag_id.rpartition(".")[2].lower() if "." in tag_id else ""
        return {
            "name": draw(st.one_of(st.just(tag_id), st.just(tag_id), json_values)),
            "id": tag_id,
            "properties": {
                "changeNumber": 1,
                "region": "germanywc" if "germany" in region else region,
                "systemService": "",
                "addressPrefixes": draw(st.lists(plausible_prefixes, max_size=4)),
            },
        }

    old = {"changeNumber": 1, "cloud": "Public", "values": [tag(i) for i in ids]}
    new = json.loads(json.dumps(old, allow_nan=True))
    new["changeNumber"] = 2
    for value in new["values"]:
        if draw(st.booleans()):
            more = draw(st.lists(plausible_prefixes, min_size=1, max_size=2))
            value["properties"]["addressPrefixes"] += more
    return old, new


@FUZZ
@given(document_pairs(), st.sampled_from(["all", "global", "westeurope", "germanywestcentral", "germanywc"]))
def test_two_parsed_documents_always_diff_and_render(pair, region):
    old_doc, new_doc = pair
    parser = PrefixParser()
    try:
        old = parse_snapshot(json.dumps(old_doc, allow_nan=True), "old", parser)
        new = parse_snapshot(json.dumps(new_doc, allow_nan=True), "new", parser)
        report = change_report(old, new, region=region, parser=parser)
    except ServiceTagsError:  # SnapshotError, or UnknownRegionError for a region not in the data
        return
    for render in RENDERERS.values():
        render(report).encode("utf-8")


@FUZZ
@given(
    st.one_of(
        json_values.map(lambda v: json.dumps(v, allow_nan=True)), st.text(max_size=50), st.binary(max_size=50)
    )
)
def test_json_input_raises_only_its_own_error(data):
    try:
        load_json(data)
    except JsonInputError as exc:
        str(exc).encode("utf-8")


# --- region messages ---------------------------------------------------------------------


@st.composite
def region_messages(draw: st.DrawFn) -> Any:
    doc: dict[str, Any] = {}
    present(draw, doc, "schema", draw(maybe(st.just("servicetags.region-check/v1"))))
    present(draw, doc, "cloud", draw(maybe(st.sampled_from(["Public", "AzureChina"]))))
    present(draw, doc, "region", draw(maybe(st.sampled_from(["westeurope", "global", "GermanyWC"]))))
    present(draw, doc, "run_id", draw(maybe(nasty_text)))
    if draw(st.booleans()):
        doc["discover"] = draw(maybe(st.booleans()))
    return doc if draw(st.integers(0, 9)) else draw(json_values)


def as_queue_content(doc: Any) -> st.SearchStrategy[str | bytes]:
    text = json.dumps(doc, allow_nan=True)
    return st.one_of(
        st.just(text),
        st.just(base64.b64encode(text.encode()).decode()),
        st.just(text.encode("utf-8", "surrogatepass")),
        st.builds(lambda cut: text[:cut], st.integers(0, len(text))),
        st.just("[" * 1500 + "]" * 1500),
    )


@FUZZ
@given(region_messages().flatmap(as_queue_content))
def test_region_messages_parse_or_are_bad_messages(content):
    try:
        message = parse_region_message(content)
    except BadMessage as exc:
        str(exc).encode("utf-8")
        return
    assert isinstance(message, RegionMessage)
    message.to_json().encode("utf-8")  # what the worker writes and logs: always encodable


# --- events, both schemas ----------------------------------------------------------------

SUBJECT = "/blobServices/default/containers/reports/blobs/Public/westeurope/a.json"


@st.composite
def events(draw: st.DrawFn) -> Any:
    cloud = draw(st.booleans())
    doc: dict[str, Any] = {}
    if cloud:
        present(draw, doc, "specversion", draw(maybe(st.just("1.0"))))
        present(draw, doc, "source", draw(maybe(st.just("/subscriptions/x/storageAccounts/a"))))
    present(draw, doc, "id", draw(maybe(st.uuids().map(str))))
    present(
        draw,
        doc,
        "type" if cloud else "eventType",
        draw(
            maybe(
                st.sampled_from(
                    [
                        "Microsoft.Storage.BlobCreated",
                        "Microsoft.Storage.BlobDeleted",
                        "Microsoft.EventGrid.SubscriptionValidationEvent",
                    ]
                )
            )
        ),
    )
    present(
        draw,
        doc,
        "subject",
        draw(
            maybe(
                st.sampled_from(
                    [SUBJECT, SUBJECT.replace("reports", "other"), SUBJECT + "/", "/blobServices/x"]
                )
            )
        ),
    )
    present(
        draw,
        doc,
        "time" if cloud else "eventTime",
        draw(maybe(st.sampled_from(["2026-11-24T10:00:00Z", "yesterday"]))),
    )
    if not cloud:
        present(draw, doc, "dataVersion", draw(maybe(st.just(""))))
        present(draw, doc, "topic", draw(maybe(st.just("/subscriptions/x"))))
    data: dict[str, Any] = {}
    present(
        draw,
        data,
        "url",
        draw(
            maybe(
                st.sampled_from(
                    [
                        "https://a.blob.core.windows.net/reports/Public/westeurope/a.json",
                        "javascript:alert(1)",
                        "https://attacker.example/x",
                    ]
                )
            )
        ),
    )
    present(draw, data, "api", draw(maybe(st.sampled_from(["PutBlob", "CreateFile", "FlushWithClose"]))))
    present(draw, data, "eTag", draw(maybe(st.just('"0x1"'))))
    present(draw, data, "validationCode", draw(maybe(st.uuids().map(str))))
    present(draw, doc, "data", data if draw(st.integers(0, 9)) else draw(json_values))
    return doc


@FUZZ
@given(events().flatmap(as_queue_content))
def test_queue_events_parse_or_are_bad_messages_or_not_ours(content):
    try:
        event = parse_queue_message(content, expected_container="reports")
    except (BadMessage, NotAReportEvent) as exc:
        str(exc).encode("utf-8")
        return
    assert isinstance(event, ReportEvent) and event.container == "reports"
    assert event.url.startswith(("http://", "https://"))


# --- webhook requests: bodies and headers ------------------------------------------------

SECRET = "correct-horse-battery-staple"
CONTENT_TYPES = [
    "application/json",
    "application/json; charset=utf-8",
    "application/cloudevents+json",
    "application/cloudevents-batch+json",
    "text/plain",
    "",
    "APPLICATION/JSON",
    "application/x-www-form-urlencoded",
    "application/json\r\nX-Injected: 1",
]


def _handled(event: ReportEvent) -> None:
    assert isinstance(event, ReportEvent)


SHARED_APP = WebhookApp(_handled, auth=SharedSecretAuth(SECRET), expected_container="reports")
# Nothing listens on port 9: a well-formed token makes the app try, and answer 503.
ENTRA_APP = WebhookApp(
    _handled,
    auth=EntraTokenAuth("http://127.0.0.1:9/keys", "https://issuer", "api://x", timeout=1.0),
    expected_container="reports",
)


@st.composite
def webhook_requests(draw: st.DrawFn) -> dict[str, Any]:
    body_doc = draw(st.one_of(st.lists(events(), max_size=3), events(), json_values))
    body = draw(
        st.one_of(
            st.just(json.dumps(body_doc, allow_nan=True).encode("utf-8", "surrogatepass")),
            st.binary(max_size=40),
            st.just(b"[" * 100_000),
        )
    )
    environ: dict[str, Any] = {
        "REQUEST_METHOD": draw(st.sampled_from(["POST", "POST", "POST", "OPTIONS", "GET", "DELETE"])),
        "PATH_INFO": draw(st.sampled_from(["/api/events", "/", "/api/events/../x", "//"])),
        "QUERY_STRING": draw(
            st.sampled_from(
                [
                    f"code={SECRET}",
                    f"code={SECRET}",
                    "",
                    "code=x",
                    f"code={SECRET}&code=y",
                    "code=%ff%fe",
                    "code",
                ]
            )
        ),
        "CONTENT_TYPE": draw(st.sampled_from(CONTENT_TYPES)),
        "CONTENT_LENGTH": draw(st.sampled_from([str(len(body)), "", "-1", "99999999999", "abc"])),
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.input": io.BytesIO(body),
    }
    for header, values in {
        "HTTP_X_SERVICETAGS_KEY": [SECRET, "", "é", "x" * 5000],
        "HTTP_AUTHORIZATION": [
            "Bearer x",
            "Bearer a.b.c",
            "Basic Zm9v",
            "Bearer ",
            "Bearer eyJhbGciOiJSUzI1NiIsImtpZCI6ImsifQ.e30.c2ln",
        ],
        "HTTP_WEBHOOK_REQUEST_ORIGIN": ["eventgrid.azure.net", ""],
    }.items():
        if draw(st.booleans()):
            environ[header] = draw(st.sampled_from(values))
    return environ


def call(app: WebhookApp, environ: dict[str, Any]) -> tuple[int, Any]:
    answered: list[str] = []
    payload = b"".join(app(environ, lambda status, headers: answered.append(status)))
    return int(answered[0].split()[0]), json.loads(payload) if payload else None


@FUZZ
@given(webhook_requests())
def test_webhook_requests_get_a_deliberate_answer(environ):
    status, _ = call(SHARED_APP, environ)
    # 500 would mean an unexpected exception: this handler never raises.
    assert status in {200, 400, 401, 404, 405, 413, 415}, status


@settings(FUZZ, max_examples=max(10, EXAMPLES // 4))
@given(webhook_requests())
def test_webhook_with_entra_tokens_never_errors(environ):
    status, _ = call(ENTRA_APP, environ)
    assert status in {200, 400, 401, 404, 405, 413, 415, 503}, status


def test_webhook_bodies_each_parse_or_are_bad_messages():
    @FUZZ
    @given(
        st.binary(max_size=60) | json_values.map(lambda v: json.dumps(v).encode()),
        st.sampled_from(CONTENT_TYPES),
    )
    def check(body, content_type):
        try:
            parse_webhook_body(body, content_type, expected_container="reports")
        except BadMessage as exc:
            str(exc).encode("utf-8")

    check()


# --- settings ----------------------------------------------------------------------------

SETTINGS = [
    "SERVICETAGS_STORAGE_CONNECTION_STRING",
    "SERVICETAGS_BLOB_ENDPOINT",
    "SERVICETAGS_QUEUE_ENDPOINT",
    "SERVICETAGS_VISIBILITY_TIMEOUT",
    "SERVICETAGS_MAX_TRIES",
    "SERVICETAGS_RETRY_DELAY",
    "SERVICETAGS_IDLE_SLEEP",
    "SERVICETAGS_CLAIM_TIMEOUT",
    "SERVICETAGS_RECIPIENTS",
    "SERVICETAGS_MAIL_FROM",
    "SERVICETAGS_MAIL_BACKEND",
    "SERVICETAGS_SMTP_PORT",
    "SERVICETAGS_SMTP_STARTTLS",
    "SERVICETAGS_LOG_FORMAT",
    "SERVICETAGS_LOG_LEVEL",
    "SERVICETAGS_CLOUD",
    "SERVICETAGS_SOURCE",
    "SERVICETAGS_REGIONS",
    "AZURE_SUBSCRIPTION_ID",
    "SERVICETAGS_MAX_SNAPSHOT_BYTES",
    "SERVICETAGS_ARM_RETRIES",
    "SERVICETAGS_DEV_CREDENTIAL",
    "SERVICETAGS_ARM_ENDPOINT",
    "SERVICETAGS_ACS_ENDPOINT",
    "SERVICETAGS_WEBHOOK_SECRET",
    "SERVICETAGS_WEBHOOK_AUDIENCE",
    "SERVICETAGS_WEBHOOK_PORT",
]
VALID = {
    "SERVICETAGS_STORAGE_CONNECTION_STRING": "UseDevelopmentStorage=true",
    "AZURE_SUBSCRIPTION_ID": "00000000-0000-0000-0000-000000000000",
    "SERVICETAGS_RECIPIENTS": '[{"address": "ops@example.com", "regions": ["westeurope"]}]',
    "SERVICETAGS_MAIL_FROM": "watch@example.com",
}
setting_values = st.one_of(
    st.sampled_from(
        [
            "0",
            "1",
            "-1",
            "99999999999999999999",
            "true",
            "maybe",
            "json",
            "text",
            "acs",
            "file",
            "[]",
            "[[[[",
            "{}",
            "a,b",
            "all",
            "https://x",
            " ",
            "9" * 5000,
            "[" * 5000,
        ]
    ),
    st.text(st.characters(blacklist_characters="\x00"), max_size=30),
)


@FUZZ
@given(st.dictionaries(st.sampled_from(SETTINGS), setting_values, max_size=6))
def test_settings_load_or_are_one_config_error(overrides):
    from notifier.main import NotifierSettings
    from notifier.serve import authenticator
    from producer.main import ProducerSettings
    from worker.main import WorkerSettings

    env = Env({**VALID, **overrides})
    loads = (WorkerSettings.from_env, NotifierSettings.from_env, ProducerSettings.from_env, authenticator)
    for load in loads:
        try:
            load(env)
        except ServiceTagsError as exc:  # ConfigError, RecipientsError: one line naming the variable
            assert "\n" not in str(exc) or isinstance(exc, ConfigError), str(exc)
            str(exc).encode("utf-8")
