"""Finding the weekly file's link on a Download Center details page, in every form met."""

from __future__ import annotations

from core.download_page import declared_cloud, find_file_link
from devstack.download_center import Published, details_page

CURRENT = Published(
    "Public", b'{"changeNumber": 347, "cloud": "Public", "values": []}', "ServiceTags_Public_20250310.json"
)
OLDER = ["ServiceTags_Public_20250217.json", "ServiceTags_Public_20250224.json"]
FOLDER = "https://download.microsoft.com/download/7/1/d/71d86715-5596-4529-9b13-da13a5de5b63/"


def test_each_page_form_yields_the_current_file():
    for mode in ("variable", "href", "any"):
        link = find_file_link(details_page("Public", mode, CURRENT, OLDER))
        assert link is not None, mode
        assert link.url == FOLDER + "ServiceTags_Public_20250310.json", mode
        assert link.form == mode


def test_no_link_is_none():
    assert find_file_link(details_page("Public", "none", CURRENT, OLDER)) is None
    assert find_file_link("<html><body>Sorry</body></html>") is None


def test_the_variable_wins_over_hrefs_and_escapes_are_decoded():
    page = (
        '<a href="https://download.microsoft.com/download/x/ServiceTags_Public_20991231.json">x</a>'
        '<script>var AcOEt_DownloadUrl = "https://download.microsoft.com/download/a/b&amp;c/'
        'ServiceTags_Public_20250310.json";</script>'
    )
    assert (
        find_file_link(page).url
        == "https://download.microsoft.com/download/a/b&c/ServiceTags_Public_20250310.json"
    )


def test_hrefs_prefer_servicetags_names_in_page_order():
    page = (
        '<a href="https://download.microsoft.com/download/x/Readme_20991231.json">r</a>'
        '<a href="https://download.microsoft.com/download/x/ServiceTags_Public_20250310.json">b</a>'
        '<a href="https://download.microsoft.com/download/x/ServiceTags_Public_20250224.json">c</a>'
    )
    assert find_file_link(page).url.endswith("ServiceTags_Public_20250310.json")


def test_bare_urls_take_the_newest_date():
    page = (
        '<script>{"u": ["https://download.microsoft.com/download/x/ServiceTags_Public_20250101.json", '
        '"https://download.microsoft.com/download/x/ServiceTags_Public_20250310.json", '
        '"https://download.microsoft.com/download/x/ServiceTags_Public_20250224.json"]}</script>'
    )
    link = find_file_link(page)
    assert link.form == "any" and link.url.endswith("ServiceTags_Public_20250310.json")


def test_the_declared_cloud_is_read_off_the_head_of_the_file():
    head = b'\xef\xbb\xbf{\n  "changeNumber": 347,\n  "cloud": "Public",\n  "values": ['
    assert declared_cloud(head) == "Public"
    assert declared_cloud(b'{"values": []}') is None
