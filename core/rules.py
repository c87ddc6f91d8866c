"""The user's own network rules, read from ARM JSON into flat records. Pure: no I/O.

Every resource shape named here is ARM's own (what `az … list`, an export, the REST API and
Azure Resource Graph give): NSGs and their security rules, Azure Firewall policies' rule
collection groups, classic Azure Firewalls, IP Groups, route tables and their routes, and the
network ACLs of storage accounts and key vaults. Each rule keeps, per address field, the
service tags it names (as written) and its literal ranges (as integer ranges), and the IP
Groups a firewall rule references.

Anything else is an error naming the source and the resource: an unknown resource type, a
field of the wrong type, a value that is neither a service tag nor an address, a range or a
prefix. A rule set is either read whole or refused: silently skipping a rule would hide it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from typing import Any, NamedTuple

from core.coverage import blocks
from core.errors import InvalidPrefixError, ServiceTagsError
from core.prefixes import Range, canonical_range, format_prefix, normalise

NSG = "Microsoft.Network/networkSecurityGroups"
NSG_RULE = "Microsoft.Network/networkSecurityGroups/securityRules"
FIREWALL_POLICY = "Microsoft.Network/firewallPolicies"
RULE_COLLECTION_GROUP = "Microsoft.Network/firewallPolicies/ruleCollectionGroups"
FIREWALL = "Microsoft.Network/azureFirewalls"
IP_GROUP = "Microsoft.Network/ipGroups"
ROUTE_TABLE = "Microsoft.Network/routeTables"
ROUTE = "Microsoft.Network/routeTables/routes"
STORAGE_ACCOUNT = "Microsoft.Storage/storageAccounts"
KEY_VAULT = "Microsoft.KeyVault/vaults"

RESOURCE_TYPES = (
    NSG,
    NSG_RULE,
    FIREWALL_POLICY,
    RULE_COLLECTION_GROUP,
    FIREWALL,
    IP_GROUP,
    ROUTE_TABLE,
    ROUTE,
    STORAGE_ACCOUNT,
    KEY_VAULT,
)
_TYPES = {t.lower(): t for t in RESOURCE_TYPES}

# Kinds of rule, as shown to users.
KINDS = {
    NSG: "NSG rule",
    NSG_RULE: "NSG rule",
    RULE_COLLECTION_GROUP: "firewall policy rule",
    FIREWALL: "firewall rule",
    IP_GROUP: "IP Group",
    ROUTE_TABLE: "route",
    ROUTE: "route",
    STORAGE_ACCOUNT: "storage network rule",
    KEY_VAULT: "key vault network rule",
}

# Words Azure accepts in address fields that are neither service tags nor addresses.
_WILDCARDS = frozenset({"*", "any", "0.0.0.0/0", "::/0"})
# A service tag or NSG keyword as written: `Storage`, `Storage.WestEurope`, `AzureCloud.westeurope`,
# `AzureActiveDirectory.ServiceEndpoint`. Letters first, so addresses never look like one.
_TAG_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]*(\.[A-Za-z0-9_-]+)*$")


class RulesError(ServiceTagsError):
    """A rules file or resource that cannot be read; the message names both."""

    def __init__(self, source: str, resource: str | None, problem: str) -> None:
        where = f"{source}: {resource}: " if resource else f"{source}: "
        super().__init__(where + problem)
        self.source, self.resource, self.problem = source, resource, problem


class Literal(NamedTuple):
    text: str  # as written
    ranges: tuple[Range, ...]  # one per CIDR block; an `a-b` range may need several


class Field(NamedTuple):
    name: str  # e.g. "destinationAddressPrefixes", "ipAddresses"
    tags: tuple[str, ...]  # service tag names as written
    literals: tuple[Literal, ...]
    ip_groups: tuple[str, ...] = ()  # IP Group resource ids, lower case
    tags_allowed: bool = False  # whether Azure accepts a service tag in this field


class Rule(NamedTuple):
    resource_id: str
    resource_type: str  # canonical casing, one of RESOURCE_TYPES
    resource_name: str
    rule: str  # where inside the resource: "securityRules/AllowStorage", "ipAddresses"
    fields: tuple[Field, ...]
    source: str  # file name, or "Azure Resource Graph"

    @property
    def kind(self) -> str:
        return KINDS[self.resource_type]


class RuleSet(NamedTuple):
    rules: tuple[Rule, ...]
    resources: int  # resources read (firewall policies themselves hold no rules)
    firewall_policies: tuple[str, ...] = ()  # ids of policies read, whose groups may be fetched


def resources_of(doc: Any, source: str) -> list[Any]:
    """The resources in a document: a list, `{"value": [...]}` (ARM, `az rest`),
    `{"data": [...]}` (Resource Graph, `az graph query`) or one resource."""
    if isinstance(doc, list):
        return doc
    if isinstance(doc, dict):
        for key in ("value", "data"):
            if isinstance(doc.get(key), list):
                return list(doc[key])
        if "type" in doc:
            return [doc]
    raise RulesError(
        source,
        None,
        "not a list of ARM resources (expected a JSON array, "
        '{"value": [...]}, {"data": [...]} or one resource with a "type")',
    )


def parse_rules(docs: Iterable[tuple[str, Any]]) -> RuleSet:
    """Rules from (source name, parsed JSON document) pairs."""
    rules: list[Rule] = []
    count = 0
    policies: list[str] = []
    for source, doc in docs:
        for index, resource in enumerate(resources_of(doc, source)):
            count += 1
            rules.extend(parse_resource(resource, source, index))
            if (
                isinstance(resource, dict)
                and str(resource.get("type", "")).lower() == FIREWALL_POLICY.lower()
            ):
                policies.append(str(resource.get("id", "")))
    return RuleSet(tuple(rules), count, tuple(policies))


def _label(resource: Any, index: int) -> str:
    if isinstance(resource, dict):
        for key in ("id", "name"):
            if isinstance(resource.get(key), str) and resource[key]:
                return f"resource {resource[key]}"
    return f"resource #{index + 1}"


def parse_resource(resource: Any, source: str, index: int = 0) -> list[Rule]:
    label = _label(resource, index)
    if not isinstance(resource, dict):
        raise RulesError(source, label, f"is a JSON {type(resource).__name__}, not an object")
    raw_type = resource.get("type")
    if not isinstance(raw_type, str) or not raw_type:
        raise RulesError(source, label, 'has no "type"')
    kind = _TYPES.get(raw_type.lower())
    if kind is None:
        raise RulesError(
            source, label, f"unknown resource type {raw_type!r} (known: {', '.join(RESOURCE_TYPES)})"
        )
    reader = _Reader(source, label, resource, kind)
    try:
        return list(_READERS[kind](reader, _inner(reader, resource)))
    except InvalidPrefixError as exc:
        raise RulesError(source, label, str(exc)) from None


class _Reader:
    def __init__(self, source: str, label: str, resource: dict[str, Any], kind: str) -> None:
        self.source, self.label, self.kind = source, label, kind
        self.id = str(resource.get("id") or resource.get("name") or label)
        self.name = str(resource.get("name") or self.id.rsplit("/", 1)[-1])

    def fail(self, problem: str) -> RulesError:
        return RulesError(self.source, self.label, problem)

    def rule(self, where: str, fields: list[Field]) -> Rule:
        return Rule(
            self.id,
            self.kind,
            self.name,
            where,
            tuple(f for f in fields if f.tags or f.literals or f.ip_groups),
            self.source,
        )


def _inner(reader: _Reader, obj: dict[str, Any], where: str = "") -> dict[str, Any]:
    """An object's `properties` (ARM, Resource Graph, exports), or the object itself: the
    Azure CLI flattens `properties` into the object."""
    if "properties" in obj:
        return _props(reader, obj, "properties", where)
    return obj


def _props(reader: _Reader, obj: dict[str, Any], key: str, where: str = "") -> dict[str, Any]:
    value = obj.get(key, {})
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise reader.fail(f"{where}{key} is not an object")
    return value


def _list(reader: _Reader, obj: dict[str, Any], key: str, where: str) -> list[Any]:
    value = obj.get(key)
    if value is None:
        return []
    if not isinstance(value, list):
        raise reader.fail(f"{where}{key} is not a list")
    return value


def _objects(
    reader: _Reader, obj: dict[str, Any], key: str, where: str = ""
) -> Iterator[tuple[str, dict[str, Any]]]:
    for i, item in enumerate(_list(reader, obj, key, where)):
        if not isinstance(item, dict):
            raise reader.fail(f"{where}{key}[{i}] is not an object")
        yield str(item.get("name") or f"#{i + 1}"), item


def address_literal(text: str) -> Literal:
    """A CIDR prefix, a single address or an `a-b` range as integer ranges; host bits in a
    prefix are dropped as Azure does (`10.0.0.5/24` means 10.0.0.0/24)."""
    text = text.strip()
    found = canonical_range(text) if "/" in text else None
    if found is not None:
        return Literal(text, (found,))
    import ipaddress  # only for text that is not a canonical prefix

    if "-" in text and "/" not in text:
        first, _, last = text.partition("-")
        try:
            low, high = ipaddress.ip_address(first.strip()), ipaddress.ip_address(last.strip())
        except ValueError:
            raise InvalidPrefixError(f"{text!r} is not a valid address range") from None
        if low.version != high.version or int(low) > int(high):
            raise InvalidPrefixError(f"{text!r} is not a valid address range")
        cidrs = blocks([(int(low), int(high) + 1)], low.version)
        return Literal(text, tuple(_block_range(low.version, n, length) for n, length in cidrs))
    try:
        network = ipaddress.ip_network(text, strict=False)
    except ValueError:
        raise InvalidPrefixError(f"{text!r} is not a valid address, range or CIDR prefix") from None
    found = canonical_range(normalise(str(network)))
    assert found is not None
    return Literal(text, (found,))


def _block_range(version: int, network: int, length: int) -> Range:
    found = canonical_range(format_prefix(version, network, length))
    assert found is not None
    return found


def _field(
    reader: _Reader,
    name: str,
    values: list[Any],
    *,
    tags_allowed: bool,
    ip_groups: list[Any] | None = None,
    where: str = "",
) -> Field:
    tags: list[str] = []
    literals: list[Literal] = []
    for value in values:
        if not isinstance(value, str):
            raise reader.fail(f"{where}{name}: {value!r} is not a string")
        text = value.strip()
        if not text or text.lower() in _WILDCARDS:
            continue
        if _TAG_NAME.match(text):
            if not tags_allowed:
                raise reader.fail(
                    f"{where}{name}: {text!r} is not an address, range or CIDR prefix "
                    "(Azure accepts no service tag here)"
                )
            tags.append(text)
            continue
        try:
            literals.append(address_literal(text))
        except InvalidPrefixError as exc:
            raise reader.fail(f"{where}{name}: {exc}") from None
    groups = []
    for value in ip_groups or []:
        if not isinstance(value, str) or not value.strip():
            raise reader.fail(f"{where}{name}: {value!r} is not an IP Group id")
        groups.append(value.strip().lower())
    return Field(name, tuple(tags), tuple(literals), tuple(groups), tags_allowed)


def _strings(reader: _Reader, obj: dict[str, Any], *keys: str, where: str = "") -> list[Any]:
    """The values of single-string and list fields together (`sourceAddressPrefix` and
    `sourceAddressPrefixes` are both allowed on one NSG rule)."""
    out: list[Any] = []
    for key in keys:
        value = obj.get(key)
        if value is None:
            continue
        if isinstance(value, list):
            out.extend(value)
        else:
            out.append(value)
    return out


# -- NSGs


def _nsg_rule(reader: _Reader, where: str, props: dict[str, Any]) -> Rule:
    fields = []
    for side in ("source", "destination"):
        values = _strings(reader, props, f"{side}AddressPrefix", f"{side}AddressPrefixes", where=where)
        fields.append(_field(reader, f"{side}AddressPrefix", values, tags_allowed=True, where=f"{where}: "))
    return reader.rule(where, fields)


def _nsg(reader: _Reader, props: dict[str, Any]) -> Iterator[Rule]:
    # defaultSecurityRules name only VirtualNetwork, AzureLoadBalancer and *: never a copy.
    for name, rule in _objects(reader, props, "securityRules"):
        yield _nsg_rule(reader, f"securityRules/{name}", _inner(reader, rule))


def _nsg_security_rule(reader: _Reader, props: dict[str, Any]) -> Iterator[Rule]:
    yield _nsg_rule(reader, f"securityRules/{reader.name}", props)


# -- Azure Firewall


def _firewall_rule(reader: _Reader, where: str, rule: dict[str, Any]) -> Rule:
    # Service tags are accepted as destinations only, and only by network rules.
    network = str(rule.get("ruleType", "NetworkRule")) == "NetworkRule"
    prefix = f"{where}: "
    fields = [
        _field(
            reader,
            "sourceAddresses",
            _list(reader, rule, "sourceAddresses", prefix),
            tags_allowed=False,
            ip_groups=_list(reader, rule, "sourceIpGroups", prefix),
            where=prefix,
        ),
        _field(
            reader,
            "destinationAddresses",
            _list(reader, rule, "destinationAddresses", prefix),
            tags_allowed=network,
            ip_groups=_list(reader, rule, "destinationIpGroups", prefix),
            where=prefix,
        ),
    ]
    return reader.rule(where, fields)


def _rule_collection_group(reader: _Reader, props: dict[str, Any]) -> Iterator[Rule]:
    for collection_name, collection in _objects(reader, props, "ruleCollections"):
        where = f"ruleCollections/{collection_name}"
        for name, rule in _objects(reader, collection, "rules", f"{where}: "):
            yield _firewall_rule(reader, f"{where}/rules/{name}", rule)


def _firewall(reader: _Reader, props: dict[str, Any]) -> Iterator[Rule]:
    for key, rule_type in (
        ("networkRuleCollections", "NetworkRule"),
        ("applicationRuleCollections", "ApplicationRule"),
        ("natRuleCollections", "NatRule"),
    ):
        for collection_name, collection in _objects(reader, props, key):
            where = f"{key}/{collection_name}"
            inner = _inner(reader, collection, f"{where}: ")
            for name, rule in _objects(reader, inner, "rules", f"{where}: "):
                yield _firewall_rule(reader, f"{where}/rules/{name}", {"ruleType": rule_type, **rule})


def _firewall_policy(reader: _Reader, props: dict[str, Any]) -> Iterator[Rule]:
    # The policy holds only the ids of its rule collection groups, read separately.
    return iter(())


# -- IP Groups, routes, storage and key vault ACLs


def _ip_group(reader: _Reader, props: dict[str, Any]) -> Iterator[Rule]:
    yield reader.rule(
        "ipAddresses",
        [_field(reader, "ipAddresses", _list(reader, props, "ipAddresses", ""), tags_allowed=False)],
    )


def _route(reader: _Reader, where: str, props: dict[str, Any]) -> Rule:
    value = props.get("addressPrefix")
    return reader.rule(
        where,
        [
            _field(
                reader,
                "addressPrefix",
                [] if value is None else [value],
                tags_allowed=True,
                where=f"{where}: ",
            )
        ],
    )


def _route_table(reader: _Reader, props: dict[str, Any]) -> Iterator[Rule]:
    for name, route in _objects(reader, props, "routes"):
        yield _route(reader, f"routes/{name}", _inner(reader, route))


def _single_route(reader: _Reader, props: dict[str, Any]) -> Iterator[Rule]:
    yield _route(reader, f"routes/{reader.name}", props)


def _network_acls(reader: _Reader, props: dict[str, Any]) -> Iterator[Rule]:
    # `az storage account list` names it networkRuleSet, its rules' values ipAddressOrRange.
    acls = _props(reader, props, "networkAcls" if "networkRuleSet" not in props else "networkRuleSet")
    values = []
    for i, item in enumerate(_list(reader, acls, "ipRules", "networkAcls.")):
        # Storage: {"value", "action"}; Key Vault: {"value"}.
        value = item.get("value", item.get("ipAddressOrRange")) if isinstance(item, dict) else None
        if value is None:
            raise reader.fail(f"networkAcls.ipRules[{i}] has no value")
        values.append(value)
    yield reader.rule(
        "networkAcls.ipRules", [_field(reader, "ipRules", values, tags_allowed=False, where="networkAcls.")]
    )


_READERS = {
    NSG: _nsg,
    NSG_RULE: _nsg_security_rule,
    FIREWALL_POLICY: _firewall_policy,
    RULE_COLLECTION_GROUP: _rule_collection_group,
    FIREWALL: _firewall,
    IP_GROUP: _ip_group,
    ROUTE_TABLE: _route_table,
    ROUTE: _single_route,
    STORAGE_ACCOUNT: _network_acls,
    KEY_VAULT: _network_acls,
}
