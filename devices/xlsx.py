"""A one-sheet XLSX workbook in which every cell is text, for people to open in a spreadsheet.

A CSV opened in a spreadsheet is guessed at: ``-2-3-144272509`` and ``@SUM`` become formulas,
``0012`` becomes 12 and ``1E5`` becomes 100000. Here every cell is an inline string
(``t="inlineStr"``: a string by its type, never a number, date or formula, whatever it starts
with) formatted as Text (number format 49, ``@``), so that editing a cell keeps it text too.

Written with the standard library (``zipfile``) rather than a library: the whole format needed
is six small XML parts, and a general writer such as openpyxl turns any string beginning with
``=`` into a formula unless each cell's type is overridden by hand. The parts follow ECMA-376
(Office Open XML), SpreadsheetML.
"""

from __future__ import annotations

import io
import re
import zipfile
from xml.sax.saxutils import escape

_MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_PKG_REL = "http://schemas.openxmlformats.org/package/2006/relationships"
_DECLARATION = '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
_TEXT_STYLE = 1  # index in cellXfs below: number format 49 ("@", Text)
# A fixed date inside the zip, so the same rows always give the same bytes.
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)

# ST_Xstring (ECMA-376 Part 1, §22.9.2.19): a character XML cannot hold is written _xHHHH_, so a
# literal "_xHHHH_" in a value must have its underscore written _x005F_ to be read back as is.
_XML_ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_LOOKS_ESCAPED = re.compile("_(?=x[0-9A-Fa-f]{4}_)")


def _cell_text(value: str) -> str:
    value = _LOOKS_ESCAPED.sub("_x005F_", value)
    value = _XML_ILLEGAL.sub(lambda match: f"_x{ord(match.group()):04X}_", value)
    return escape(value)


def _column_letters(index: int) -> str:
    """0 → A, 25 → Z, 26 → AA."""
    letters = ""
    index += 1
    while index:
        index, remainder = divmod(index - 1, 26)
        letters = chr(ord("A") + remainder) + letters
    return letters


def _sheet(rows, widths) -> str:
    parts = [_DECLARATION, f'<worksheet xmlns="{_MAIN}">']
    if widths:
        parts.append("<cols>")
        for index, width in enumerate(widths, start=1):
            parts.append(
                f'<col min="{index}" max="{index}" width="{width}" customWidth="1" '
                f'style="{_TEXT_STYLE}"/>'
            )
        parts.append("</cols>")
    parts.append("<sheetData>")
    for row_number, row in enumerate(rows, start=1):
        parts.append(f'<row r="{row_number}">')
        for column, value in enumerate(row):
            parts.append(
                f'<c r="{_column_letters(column)}{row_number}" t="inlineStr" s="{_TEXT_STYLE}">'
                f'<is><t xml:space="preserve">{_cell_text(str(value))}</t></is></c>'
            )
        parts.append("</row>")
    parts.append("</sheetData></worksheet>")
    return "".join(parts)


_CONTENT_TYPES = (
    _DECLARATION
    + '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
    '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
    '<Default Extension="xml" ContentType="application/xml"/>'
    '<Override PartName="/xl/workbook.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
    '<Override PartName="/xl/worksheets/sheet1.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/>'
    '<Override PartName="/xl/styles.xml" '
    'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"/>'
    "</Types>"
)
_ROOT_RELS = (
    _DECLARATION + f'<Relationships xmlns="{_PKG_REL}">'
    '<Relationship Id="rId1" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/officeDocument" '
    'Target="xl/workbook.xml"/></Relationships>'
)
_WORKBOOK_RELS = (
    _DECLARATION + f'<Relationships xmlns="{_PKG_REL}">'
    '<Relationship Id="rId1" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/worksheet" '
    'Target="worksheets/sheet1.xml"/>'
    '<Relationship Id="rId2" '
    'Type="http://schemas.openxmlformats.org/officeDocument/2006/relationships/styles" '
    'Target="styles.xml"/></Relationships>'
)
_STYLES = (
    _DECLARATION + f'<styleSheet xmlns="{_MAIN}">'
    '<fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>'
    '<fills count="2"><fill><patternFill patternType="none"/></fill>'
    '<fill><patternFill patternType="gray125"/></fill></fills>'
    '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
    '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
    '<cellXfs count="2"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/>'
    '<xf numFmtId="49" fontId="0" fillId="0" borderId="0" xfId="0" applyNumberFormat="1"/>'
    "</cellXfs>"
    '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles>'
    "</styleSheet>"
)


def _workbook(sheet_name: str) -> str:
    return (
        _DECLARATION + f'<workbook xmlns="{_MAIN}" xmlns:r="{_REL}">'
        f'<sheets><sheet name="{escape(sheet_name)}" sheetId="1" r:id="rId1"/></sheets>'
        "</workbook>"
    )


def text_workbook(rows, sheet_name: str = "Sheet1", widths=()) -> bytes:
    """The bytes of an .xlsx file holding ``rows`` (lists of strings), every cell as text.

    ``widths``: optional column widths in characters, one per column."""
    parts = {
        "[Content_Types].xml": _CONTENT_TYPES,
        "_rels/.rels": _ROOT_RELS,
        "xl/workbook.xml": _workbook(sheet_name),
        "xl/_rels/workbook.xml.rels": _WORKBOOK_RELS,
        "xl/styles.xml": _STYLES,
        "xl/worksheets/sheet1.xml": _sheet(rows, widths),
    }
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as archive:
        for name, text in parts.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_DATE)
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, text.encode("utf-8"))
    return out.getvalue()
