"""The plain reference `servicetags impact` is measured against: load the report and the
rules with `json`, then check every literal of every rule against every changed range with
`ipaddress` (all pairs), and every tag name against the changed tags. No IP Groups, no copies."""

import ipaddress
import json
import sys
from pathlib import Path

report = json.loads(Path(sys.argv[1]).read_text())
changed = {t["id"].lower() for t in report["tags"] if t["net_added"] or t["net_removed"]}
blocks = [ipaddress.ip_network(p) for t in report["tags"] for p in t["net_added"] + t["net_removed"]]
hits = 0
for path in sorted(Path(sys.argv[2]).glob("*.json")):
    for resource in json.loads(path.read_text()):
        values = (
            resource["properties"]["ipAddresses"]
            if "ipAddresses" in resource["properties"]
            else [
                p
                for rule in resource["properties"]["securityRules"]
                for p in [rule["properties"]["destinationAddressPrefix"]]
            ]
        )
        for value in values:
            if value.lower() in changed:
                hits += 1
            elif value[0].isdigit() or ":" in value:
                net = ipaddress.ip_network(value, strict=False)
                hits += any(net.overlaps(b) for b in blocks)
print(hits)
