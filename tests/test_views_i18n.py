"""The Chinese catalogue is complete and its committed .mo says what the .po says."""

import gettext
import json
import re
from pathlib import Path

LOCALE = Path(__file__).resolve().parent.parent / "locale"


def po_entries(path):
    """[(msgid, [msgstr...], flags)] from a .po file (enough of the format for our files)."""
    entries = []
    for block in path.read_text(encoding="utf-8").split("\n\n"):
        fields, current, flags = {}, None, ""
        for line in block.splitlines():
            if line.startswith("#,"):
                flags = line
            match = re.match(r'^(msgid|msgid_plural|msgstr(?:\[\d\])?) "(.*)"$', line)
            if match:
                current = match.group(1)
                fields[current] = match.group(2)
            elif line.startswith('"') and current:
                fields[current] += line[1:-1]
        if fields.get("msgid"):
            strs = [v for k, v in fields.items() if k.startswith("msgstr")]
            entries.append((fields["msgid"], strs, flags))
    return entries


def unescape(text):
    """A .po string's C escapes (\\" \\n ...) are JSON's too."""
    return json.loads(f'"{text}"')


def test_every_string_has_a_chinese_translation():
    entries = po_entries(LOCALE / "zh_Hans" / "LC_MESSAGES" / "django.po")
    assert len(entries) > 200
    untranslated = [msgid for msgid, strs, _ in entries if not all(strs)]
    fuzzy = [msgid for msgid, _, flags in entries if "fuzzy" in flags]
    assert untranslated == [] and fuzzy == []


def test_the_compiled_catalogue_matches_the_source():
    po = LOCALE / "zh_Hans" / "LC_MESSAGES" / "django.po"
    with open(LOCALE / "zh_Hans" / "LC_MESSAGES" / "django.mo", "rb") as compiled:
        catalogue = gettext.GNUTranslations(compiled)
    for msgid, strs, _ in po_entries(po):
        assert catalogue.gettext(unescape(msgid)) == unescape(strs[0]), msgid


def test_placeholders_survive_translation():
    for msgid, strs, _ in po_entries(LOCALE / "zh_Hans" / "LC_MESSAGES" / "django.po"):
        wanted = sorted(re.findall(r"%\(\w+\)[sdr]|\{\{ *\w+ *\}\}", msgid))
        for text in strs:
            assert sorted(re.findall(r"%\(\w+\)[sdr]|\{\{ *\w+ *\}\}", text)) == wanted, msgid
    assert gettext.translation(
        "django", LOCALE, languages=["zh_Hans"]).gettext("MQTT connection parameters") == "MQTT连接参数"
