"""The static web view: pages, feeds and the lookup page, published to $web."""
