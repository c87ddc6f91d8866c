"""Region mapping read off the data's tag names."""

from __future__ import annotations

from core.change_report import index_of
from core.prefixes import PrefixParser
from runtime.snapshot_files import load_snapshot
from tests.conftest import snapshot_path


def test_mapping_from_data_covers_every_region_whose_code_differs():
    index = index_of(load_snapshot(snapshot_path(361), PrefixParser()))
    differing = {code: name for code, name in index.name_by_code.items() if code != name}
    assert differing == {
        "brazilse": "brazilsoutheast",
        "chilec": "chilecentral",
        "usstagee": "eastusstg",
        "centralfrance": "francecentral",
        "southfrance": "francesouth",
        "germanyn": "germanynorth",
        "germanywc": "germanywestcentral",
        "norwaye": "norwayeast",
        "norwayw": "norwaywest",
        "usstagec": "southcentralusstg",
        "switzerlandn": "switzerlandnorth",
        "switzerlandw": "switzerlandwest",
    }
    assert index.code_for("GermanyWestCentral") == "germanywc"
    assert index.code_for("japaneast") == "japaneast"
    assert index.code_for("global") == ""
    assert index.code_for("all") is None
    assert index.name_for("") == "global"
    assert len(index.names) == 69
