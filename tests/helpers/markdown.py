"""Markdown as GitHub renders it: headings, their anchors, the text outside code blocks."""

from __future__ import annotations

import re


def prose(markdown: str) -> str:
    """The text outside fenced code blocks (a `# comment` in a shell block is not a heading)."""
    return re.sub(r"(?ms)^ *```.*?^ *```[^\n]*$", "", markdown)


def github_slug(heading: str) -> str:
    """The anchor GitHub renders for a heading: lower case, inline code and link syntax dropped,
    punctuation other than `-` and `_` removed, spaces turned into `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.strip())
    text = re.sub(r"[^\w\- ]", "", text.replace("`", "").lower())
    return text.replace(" ", "-")


def heading_anchors(markdown: str) -> set[str]:
    """The anchors of a Markdown document's headings (a repeated one gets `-1`, `-2`, ...)."""
    anchors: set[str] = set()
    for heading in re.findall(r"^#{1,6} +(.+?) *#*$", prose(markdown), re.MULTILINE):
        slug = base = github_slug(heading)
        n = 0
        while slug in anchors:
            n += 1
            slug = f"{base}-{n}"
        anchors.add(slug)
    return anchors
