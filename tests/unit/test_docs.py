"""The docs: the config reference is generated from the schema, and every relative link resolves."""

import re
from pathlib import Path

from pymon.model import schema_doc

ROOT = Path(__file__).resolve().parents[2]


def test_configuration_md_is_generated_from_the_schema():
    doc = ROOT / "docs" / "configuration.md"
    assert doc.read_text() == schema_doc.render(), (
        "docs/configuration.md differs from the schema: edit the descriptions in src/pymon/model/config.py "
        "(or the prose in src/pymon/model/config_doc.md), then regenerate with "
        "`pymon schema --markdown > docs/configuration.md`")


def test_every_schema_key_has_a_description():
    for path, obj in schema_doc.objects():
        for key, sub in obj["properties"].items():
            assert sub.get("description"), f"{path}.{key}: no description"


_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _docs() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CHANGELOG.md", *sorted((ROOT / "docs").glob("*.md"))]


def _anchors(text: str) -> set[str]:
    out = set()
    for h in re.findall(r"^#+ (.+)$", text, re.M):
        a = re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-")
        out.add(a)
    return out


def test_relative_links_resolve():
    bad = []
    for doc in _docs():
        text = re.sub(r"```.*?```", "", doc.read_text(), flags=re.S)
        for target in _LINK.findall(text):
            if re.match(r"[a-z]+:", target):
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            if not dest.exists():
                bad.append(f"{doc.relative_to(ROOT)}: {target}: no such file")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest.read_text()):
                bad.append(f"{doc.relative_to(ROOT)}: {target}: no such heading")
    assert not bad, "\n".join(bad)
