"""Detectors: regexes that find candidates fast, and checks that run on candidates only.

Speed: Python's regex engine skips quickly only over text that cannot start a match,
and only when every match starts with one literal or one character class. One regex
with an alternative per detector gets neither and costs ~300 ns per character. So the
detectors run as a few passes, each with a cheap first character: "@" for email (the
local part is found walking back), ":" for ipv6, "-----BEGIN " for keys, "eyJ" for
JWTs, "A" for AWS keys, and one pass for everything that starts at a digit, "+" or "("
(cards, SSNs, phones, IPv4, and IBANs, found at their check digits).

StreamMasker (stream.py) relies on three facts about what is found here:
- every match except jwt and private_key is at most BOUNDED_MAX characters long;
- no match except private_key contains a character outside INNER_CHARS;
- lookarounds test only characters of INNER_CHARS, and only negatively, so cutting a
  text just after any other character cannot change what is found on either side.
Patterns are ASCII on purpose: the sets above stay small and fixed.
"""
from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

INNER_CHARS = "A-Za-z0-9._%+\\-@:() "  # a regex class body
BOUNDED_MAX = 1024
SEP = "\x00"  # joins many strings into one text to scan; no match crosses it

PK_BEGIN = r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
PK_END = r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----"
_EMAIL_LOCAL = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._%+-")
_HEX = "[0-9A-Fa-f]"
_OCTETS = r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}"
_PHONE_END = r"(?![0-9]|[.-][0-9])"


@dataclass(frozen=True, slots=True)
class Detector:
    """`pattern` finds the whole secret on its own; `check(text, start, end)` confirms a
    candidate and returns where the secret ends, or -1."""

    name: str
    pattern: str
    check: Callable[[str, int, int], int]


def _accept(s: str, start: int, end: int) -> int:
    return end


def _luhn(digits: str) -> bool:
    total = 0
    for i, ch in enumerate(reversed(digits)):
        d = ord(ch) - 48
        if i & 1:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def _check_card(s: str, start: int, end: int) -> int:
    # The regex grabs up to 19 digits; the card may be a shorter prefix that ends where a
    # digit group ends, as in "4111 1111 1111 1111 12/25". Longest valid prefix wins.
    digits: list[str] = []
    ends: list[tuple[int, int]] = []
    n = len(s)
    for i in range(start, end):
        c = s[i]
        if "0" <= c <= "9":
            digits.append(c)
            if len(digits) >= 13 and (i + 1 == n or not "0" <= s[i + 1] <= "9"):
                ends.append((i + 1, len(digits)))
    for e, count in reversed(ends):
        if _luhn("".join(digits[:count])):
            return e
    return -1


def _check_ssn(s: str, start: int, end: int) -> int:
    # Area 000, 666 and 9xx, group 00 and serial 0000 are never issued.
    area = s[start:start + 3]
    if area in ("000", "666") or area[0] == "9" or s[start + 4:start + 6] == "00" \
            or s[start + 7:end] == "0000":
        return -1
    return end


def _check_ipv4(s: str, start: int, end: int) -> int:
    return end if all(int(p) <= 255 for p in s[start:end].split(".")) else -1


def _check_ipv6(s: str, start: int, end: int) -> int:
    text = s[start:end]
    if text.strip(":") == "":  # "::" alone is punctuation far more often than an address
        return -1
    try:
        ipaddress.IPv6Address(text)
    except ValueError:
        return -1
    return end


def _mod97(raw: str) -> bool:
    try:
        return int("".join(str(int(c, 36)) for c in raw[4:] + raw[:4])) % 97 == 1
    except ValueError:
        return False


def _check_iban(s: str, start: int, end: int) -> int:
    # A trailing short group may be a neighbouring word ("... 32 OK"): retry without it.
    cut = end
    while cut - start >= 15:
        raw = s[start:cut].replace(" ", "")
        if 15 <= len(raw) <= 34 and _mod97(raw):
            return cut
        cut = s.rfind(" ", start, cut)
    return -1


_ALL = (
    Detector("private_key", PK_BEGIN + r"[\s\S]*?(?:" + PK_END + r"|\Z)", _accept),
    Detector("jwt", r"(?<![A-Za-z0-9_-])eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
                    r"(?:\.[A-Za-z0-9_-]+){0,2}", _accept),
    Detector("aws_access_key", r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])", _accept),
    Detector("email", r"(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]{1,64}@"
                      r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}"
                      r"[A-Za-z]{2,63}(?![A-Za-z0-9-])", _accept),
    Detector("ipv6", rf"(?<![0-9A-Za-z:.])(?:{_HEX}{{0,4}}:){{2,7}}(?:{_OCTETS}|{_HEX}{{1,4}})?"
                     r"(?![0-9A-Za-z:]|\.[0-9])", _check_ipv6),
    Detector("iban", r"(?<![A-Za-z0-9])[A-Z]{2}[0-9]{2}(?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?"
                     r"(?![A-Za-z0-9])", _check_iban),
    Detector("credit_card", r"(?<![0-9])[1-9](?:[ -]?[0-9]){12,18}", _check_card),
    Detector("ssn", r"(?<![0-9])[0-9]{3}(?P<ssn_sep>[- ])[0-9]{2}(?P=ssn_sep)[0-9]{4}(?![0-9]|-[0-9])",
             _check_ssn),
    # A leading + (E.164, 8-15 digits) or a US layout with separators: bare digit runs
    # are ids and amounts far more often than phone numbers.
    Detector("phone", r"(?<![0-9A-Za-z+])(?:\+[1-9](?:[ .-]?\(?[0-9]\)?){7,14}"
                      r"|(?:1[ .-])?(?:\([0-9]{3}\)[ .-]?|[0-9]{3}[ .-])[0-9]{3}[ .-][0-9]{4})"
                      + _PHONE_END, _accept),
    Detector("ipv4", rf"(?<![0-9.]){_OCTETS}(?![0-9]|\.[0-9])", _check_ipv4),
)
DETECTORS: Mapping[str, Detector] = MappingProxyType({d.name: d for d in _ALL})

# The digit pass: its first character is consumed by one class (which lets the engine
# skip everything else fast), and each alternative then checks, looking behind, that
# its own detector could start there. Same order as _ALL: first match at a position wins.
_DIGIT_ALTS = {
    "iban": r"(?<=[0-9])(?<=(?<![A-Za-z0-9])[A-Z]{2}[0-9])"
            r"[0-9](?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])",
    "credit_card": r"(?<=[1-9])(?<![0-9].)(?:[ -]?[0-9]){12,18}",
    "ssn": r"(?<=[0-9])(?<![0-9].)[0-9]{2}(?P<ssn_sep>[- ])[0-9]{2}(?P=ssn_sep)[0-9]{4}(?![0-9]|-[0-9])",
    "phone": r"(?<![0-9A-Za-z+].)(?:(?<=\+)[1-9](?:[ .-]?\(?[0-9]\)?){7,14}"
             r"|(?<=1)[ .-](?:\([0-9]{3}\)[ .-]?|[0-9]{3}[ .-])[0-9]{3}[ .-][0-9]{4}"
             r"|(?<=\()[0-9]{3}\)[ .-]?[0-9]{3}[ .-][0-9]{4}"
             r"|(?<=[0-9])[0-9]{2}[ .-][0-9]{3}[ .-][0-9]{4})" + _PHONE_END,
    "ipv4": r"(?<=[0-9])(?<![0-9.].)[0-9]{0,2}(?:\.[0-9]{1,3}){3}(?![0-9]|\.[0-9])",
}
_LITERAL_PASSES = {  # each starts with a literal; the text variant is used outside JSON
    "private_key": PK_BEGIN + r"[\s\S]*?(?:" + PK_END + r"|\Z)",
    "jwt": r"eyJ(?<![A-Za-z0-9_-]eyJ)[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
           r"(?:\.[A-Za-z0-9_-]+){0,2}",
    "aws_access_key": r"A[KS]IA(?<![A-Za-z0-9]A[KS]IA)[A-Z0-9]{16}(?![A-Za-z0-9])",
    "email": r"@(?<=[A-Za-z0-9._%+-]@)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}"
             r"[A-Za-z]{2,63}(?![A-Za-z0-9-])",
    # A colon run that can be an address: "::" in it, or 7 colons; times have neither.
    "ipv6": r":(?=:|[0-9A-Fa-f:.]*::|(?:[0-9A-Fa-f.]*:){6})[0-9A-Fa-f:.]*",
}
# A key block must not run past the string it starts in: in joined text it stops at
# SEP, in serialised JSON at the closing quote (escaped quotes are blanked by then).
_PK_IN = {"joined": PK_BEGIN + r"[^\x00]*?(?:" + PK_END + r"|(?=\x00)|\Z)",
          "json": PK_BEGIN + r'[^"]*?(?:' + PK_END + r'|(?="))'}
_PREFILTER = {"private_key": "\\-", "jwt": "J", "aws_access_key": "A", "email": "@", "ipv6": ":"}


@dataclass(frozen=True, slots=True)
class Compiled:
    prefilter: re.Pattern[str]
    passes: Mapping[str, tuple[tuple[str, re.Pattern[str]], ...]]  # by mode
    digit_names: tuple[str, ...]
    single: Mapping[str, re.Pattern[str]]


@functools.lru_cache(maxsize=64)
def compile_detectors(names: frozenset[str]) -> Compiled | None:
    """The passes for one set of detector names, compiled once per set."""
    if not names:
        return None
    passes: list[tuple[str, re.Pattern[str]]] = []
    for name, pattern in _LITERAL_PASSES.items():
        if name in names:
            passes.append((name, re.compile(pattern)))
    digit_names = tuple(n for n in _DIGIT_ALTS if n in names)
    if digit_names:
        alts = "|".join(f"(?P<{n}>{_DIGIT_ALTS[n]})" for n in digit_names)
        passes.append(("digits", re.compile(f"[0-9+(](?:{alts})")))
    modes = {"text": tuple(passes)}
    for mode, pk in _PK_IN.items():
        modes[mode] = tuple((n, re.compile(pk) if n == "private_key" else rx) for n, rx in passes)
    chars = {_PREFILTER.get(n, "0-9+(") for n in names}
    return Compiled(
        prefilter=re.compile("[" + "".join(sorted(chars)) + "]"),
        passes=MappingProxyType(modes), digit_names=digit_names,
        single=MappingProxyType({n: re.compile(DETECTORS[n].pattern) for n in digit_names}))


def _digit_match(c: Compiled, s: str, m: re.Match[str]) -> tuple[int, int, str] | None:
    name = m.lastgroup
    assert name is not None
    start = m.start() - 2 if name == "iban" else m.start()
    end = DETECTORS[name].check(s, start, m.end())
    if end > start:
        return start, end, name
    # The candidate failed its check, but another kind may start at the same place
    # ("555 123 4567 8901" is no card, yet holds a phone number).
    start = m.start()
    for other in c.digit_names:
        if other not in (name, "iban") and (m2 := c.single[other].match(s, start)) is not None:
            end = DETECTORS[other].check(s, start, m2.end())
            if end > start:
                return start, end, other
    return None


def _ipv6_match(s: str, m: re.Match[str]) -> tuple[int, int, str] | None:
    start = m.start()
    while start > 0 and m.start() - start < 4 and s[start - 1] in "0123456789abcdefABCDEF":
        start -= 1
    m2 = _IPV6.match(s, start)
    if m2 is None:
        return None
    end = _check_ipv6(s, start, m2.end())
    return (start, end, "ipv6") if end > start else None


_IPV6 = re.compile(DETECTORS["ipv6"].pattern)


def scan(c: Compiled, s: str, mode: str = "text") -> list[tuple[int, int, str]]:
    """Confirmed secrets in `s` as sorted, disjoint (start, end, detector) spans.

    mode "joined": `s` is many strings joined by SEP, each scanned as if alone;
    mode "json": `s` is serialised JSON with escapes blanked (see masker._mask_tokens).
    """
    if c.prefilter.search(s) is None:
        return []
    spans: list[tuple[int, int, str]] = []
    for kind, rx in c.passes[mode]:
        m = rx.search(s)
        while m is not None:
            if kind == "digits":
                span = _digit_match(c, s, m)
                nxt = span[1] if span else m.start() + 1
            elif kind == "email":
                start = m.start()
                floor = max(0, start - 64)
                while start > floor and s[start - 1] in _EMAIL_LOCAL:
                    start -= 1
                span, nxt = (start, m.end(), kind), m.end()
            elif kind == "ipv6":
                span, nxt = _ipv6_match(s, m), m.end()
            else:
                span, nxt = (m.start(), m.end(), kind), m.end()
            if span is not None:
                spans.append(span)
            m = rx.search(s, nxt)
    if len(spans) > 1:
        # Passes overlap (a card inside an email, an IPv4 inside an IPv6): the match that
        # starts first wins, then the longest.
        spans.sort(key=lambda sp: (sp[0], -sp[1]))
        kept = [spans[0]]
        for sp in spans[1:]:
            if sp[0] >= kept[-1][1]:
                kept.append(sp)
        spans = kept
    return spans
