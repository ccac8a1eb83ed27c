"""Session settings that change how PostgreSQL reads the text of later statements (pure).

Two settings decide how the server splits text into tokens, and so whether a `'`, `\\`
or `;` ends a literal or a statement:

- `client_encoding`: in SJIS, BIG5, GBK, UHC, GB18030, JOHAB and SHIFT_JIS_2004 the
  second byte of a character can be below 0x80 (`\\`, `'`). The server converts the
  text from that encoding before it parses; a relay that decoded it otherwise would
  see other statements. Only encodings in which every byte below 0x80 is ASCII are
  accepted, by an allowlist of the names PostgreSQL knows (anything else, an alias
  added in a later release included, is refused).
- `standard_conforming_strings`: when off, `'a\\''` is one string literal.

PostgreSQL matches encoding names after lower-casing them and dropping every
character that is not a letter or digit (`'Big-5 '`, `S.JIS`, `windows932`), so the
same is done here before looking a name up.
"""
from __future__ import annotations

import re

# PostgreSQL's aliases (src/common/encnames.c), cleaned as the server cleans them,
# for the encodings in which a byte below 0x80 is always ASCII.
_SAFE_ALIASES: dict[str, str] = {
    "abc": "WIN1258", "alt": "WIN866", "euccn": "EUC_CN", "eucjis2004": "EUC_JIS_2004",
    "eucjp": "EUC_JP", "euckr": "EUC_KR", "euctw": "EUC_TW",
    "iso88591": "LATIN1", "iso885910": "LATIN6", "iso885913": "LATIN7", "iso885914": "LATIN8",
    "iso885915": "LATIN9", "iso885916": "LATIN10", "iso88592": "LATIN2", "iso88593": "LATIN3",
    "iso88594": "LATIN4", "iso88595": "ISO_8859_5", "iso88596": "ISO_8859_6",
    "iso88597": "ISO_8859_7", "iso88598": "ISO_8859_8", "iso88599": "LATIN5",
    "koi8": "KOI8R", "koi8r": "KOI8R", "koi8u": "KOI8U",
    **{f"latin{i}": f"LATIN{i}" for i in range(1, 11)},
    "muleinternal": "MULE_INTERNAL", "sqlascii": "SQL_ASCII",
    "tcvn": "WIN1258", "tcvn5712": "WIN1258", "vscii": "WIN1258",
    "unicode": "UTF8", "utf8": "UTF8", "win": "WIN1251",
    **{f"win{n}": f"WIN{n}" for n in (866, 874, *range(1250, 1259))},
    **{f"windows{n}": f"WIN{n}" for n in (866, 874, *range(1250, 1259))},
}

# How the relay decodes text in each accepted encoding, by the name the server reports
# in ParameterStatus. A SQL_ASCII client's bytes are not converted: the server reads
# them in its own encoding (the relay does the same, pgparity.Reading), and when that is
# SQL_ASCII too, only ASCII reads the same both ways. EUC_TW and MULE_INTERNAL have no
# Python codec; statements are refused in them.
CODECS: dict[str, str] = {
    "UTF8": "utf-8", "SQL_ASCII": "ascii", "EUC_JP": "euc-jp", "EUC_KR": "euc-kr",
    "EUC_CN": "gb2312", "EUC_JIS_2004": "euc_jis_2004", "KOI8R": "koi8-r", "KOI8U": "koi8-u",
    "LATIN1": "latin-1", "LATIN2": "iso8859-2", "LATIN3": "iso8859-3", "LATIN4": "iso8859-4",
    "LATIN5": "iso8859-9", "LATIN6": "iso8859-10", "LATIN7": "iso8859-13", "LATIN8": "iso8859-14",
    "LATIN9": "iso8859-15", "LATIN10": "iso8859-16", "ISO_8859_5": "iso8859-5",
    "ISO_8859_6": "iso8859-6", "ISO_8859_7": "iso8859-7", "ISO_8859_8": "iso8859-8",
    "WIN866": "cp866", "WIN874": "cp874", **{f"WIN{n}": f"cp{n}" for n in range(1250, 1259)},
}

# The ASCII-unsafe ones, for error messages and tests (refused by not being above).
UNSAFE_ENCODINGS = ("SJIS", "BIG5", "GBK", "UHC", "GB18030", "JOHAB", "SHIFT_JIS_2004")

_NOT_ALNUM = re.compile(r"[^a-z0-9]")
# What PostgreSQL's parse_bool takes as true, for standard_conforming_strings.
_TRUE = frozenset({"on", "true", "yes"})


def clean_encoding_name(name: str) -> str:
    """The name as PostgreSQL compares it (clean_encoding_name in encnames.c)."""
    return _NOT_ALNUM.sub("", name.lower())


def safe_encoding(name: str) -> str | None:
    """The canonical name of an ASCII-safe client encoding called `name`, else None."""
    return _SAFE_ALIASES.get(clean_encoding_name(name))


def codec(reported: str) -> str | None:
    """The Python codec for an encoding the server reported, or None: refuse statements."""
    return CODECS.get(reported.upper())


def encoding_value_safe(value: str | None) -> bool:
    """Whether setting client_encoding to `value` keeps the relay and the server reading
    alike. None is RESET / DEFAULT: back to the value confirmed at login, which the relay
    checked then (statements are refused in an unsafe one), so it is safe."""
    return value is None or safe_encoding(value) is not None


def conforming_value_safe(value: str | None) -> bool:
    """Whether setting standard_conforming_strings to `value` provably leaves it on.
    A reset (None) goes back to a default the relay cannot see: refused."""
    return value is not None and value.strip().lower() in _TRUE
