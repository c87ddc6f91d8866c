"""The minimal reference `servicetags diff` is measured against: load both files with `json`
and take a per-tag set difference of the prefix strings. No validation, no coverage."""

import gzip
import json
import sys

with gzip.open(sys.argv[1]) as f:
    old = json.loads(f.read())
with gzip.open(sys.argv[2]) as f:
    new = json.loads(f.read())
a = {v["id"]: set(v["properties"]["addressPrefixes"]) for v in old["values"]}
b = {v["id"]: set(v["properties"]["addressPrefixes"]) for v in new["values"]}
changed = {
    k: (sorted(b.get(k, set()) - a.get(k, set())), sorted(a.get(k, set()) - b.get(k, set())))
    for k in a.keys() | b.keys()
    if a.get(k) != b.get(k)
}
json.dump(changed, sys.stdout)
