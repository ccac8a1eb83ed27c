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
- lookarounds only ask whether a neighbour is one of INNER_CHARS, so cutting a text
  just after any other character cannot change what is found on either side.
Patterns are ASCII on purpose: the sets above stay small and fixed.
"""
from __future__ import annotations

import functools
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

INNER_CHARS = "A-Za-z0-9_.%+\\-@:() "  # a regex class body
BOUNDED_MAX = 1024

PK_BEGIN = r"-----BEGIN (?:[A-Z0-9]+ )*PRIVATE KEY-----"
PK_END = r"-----END (?:[A-Z0-9]+ )*PRIVATE KEY-----"
PK_BLOCK = PK_BEGIN + r'[^"]*?(?:' + PK_END + r'|(?=")|\Z)'
# In blanked text (see blank_escapes) an escaped quote, \x02\x02, ends a block too.
_PK_BLANKED = PK_BEGIN + r'[^"\x02]*?(?:' + PK_END + r'|(?=["\x02])|\Z)'
_HEX = "[0-9A-Fa-f]"
_OCTETS = r"[0-9]{1,3}(?:\.[0-9]{1,3}){3}"
_OCTET = r"(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_PHONE_END = r"(?![0-9]|[.-][0-9])"


@dataclass(frozen=True, slots=True)
class Detector:
    """`pattern` finds the whole secret on its own; `check(text, start, end)` confirms a
    candidate and returns where the secret ends, or -1. The scan itself runs the same
    patterns rearranged for speed (_LITERAL_PASSES, _DIGIT_ALTS); tests hold both to
    the same cases."""

    name: str
    pattern: str
    check: Callable[[str, int, int], int]


def _accept(s: str, start: int, end: int) -> int:
    return end


# Digit characters to their values, and to their doubled values less 9 when over 9:
# summing bytes runs in C, unlike int() per digit.
_VALUE = bytes.maketrans(b"0123456789", bytes(range(10)))
_DOUBLED = bytes.maketrans(b"0123456789", bytes([0, 2, 4, 6, 8, 1, 3, 5, 7, 9]))


def _luhn(digits: str) -> bool:
    raw = digits.encode()
    return (sum(raw[-1::-2].translate(_VALUE)) + sum(raw[-2::-2].translate(_DOUBLED))) % 10 == 0


def _check_card(s: str, start: int, end: int) -> int:
    n = len(s)
    if end == n or not "0" <= s[end] <= "9":  # the usual case: the whole run is the card
        if _luhn(s[start:end].replace(" ", "").replace("-", "")):
            return end
    # The regex grabs up to 19 digits; the card may be a shorter prefix that ends where a
    # digit group ends, as in "4111 1111 1111 1111 12/25". Longest valid prefix wins.
    digits: list[str] = []
    ends: list[tuple[int, int]] = []
    for i in range(start, end):
        c = s[i]
        if "0" <= c <= "9":
            digits.append(c)
            if len(digits) >= 13 and (i + 1 == n or not "0" <= s[i + 1] <= "9"):
                ends.append((i + 1, len(digits)))
    for e, count in reversed(ends):
        if e != end and _luhn("".join(digits[:count])):
            return e
    return -1


def _check_ssn(s: str, start: int, end: int) -> int:
    # Area 000, 666 and 9xx, group 00 and serial 0000 are never issued.
    area = s[start:start + 3]
    if area in ("000", "666") or area[0] == "9" or s[start + 4:start + 6] == "00" \
            or s[start + 7:end] == "0000":
        return -1
    return end


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
    # The whole block; unterminated, up to where its string ends (a quote: PEM has
    # none, JSON strings end there) or the text does.
    Detector("private_key", PK_BLOCK, _accept),
    # Not after a letter or digit (inside a blob); after a "-" is fine ("...KEY-----eyJ").
    Detector("jwt", r"(?<![A-Za-z0-9_])eyJ[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
                    r"(?:\.[A-Za-z0-9_-]+){0,2}", _accept),
    Detector("aws_access_key", r"(?<![A-Za-z0-9])(?:AKIA|ASIA)[A-Z0-9]{16}(?![A-Za-z0-9])", _accept),
    Detector("email", r"(?<![A-Za-z0-9_.%+-])[A-Za-z0-9_.%+-]{1,64}@"
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
    Detector("ipv4", rf"(?<![0-9.]){_OCTET}(?:\.{_OCTET}){{3}}(?![0-9]|\.[0-9])", _accept),
)
DETECTORS: Mapping[str, Detector] = MappingProxyType({d.name: d for d in _ALL})

# The digit pass: its first character is consumed by one class (which lets the engine
# skip everything else fast), and each alternative then checks, looking behind, that
# its own detector could start there. Same order as _ALL: first match at a position wins.
_DIGIT_ALTS = {
    "iban": r"(?<=[A-Z][A-Z][0-9])(?<![A-Za-z0-9][A-Z][A-Z][0-9])"
            r"[0-9](?: ?[A-Z0-9]{4}){2,7}(?: ?[A-Z0-9]{1,3})?(?![A-Za-z0-9])",
    "credit_card": r"(?<=[1-9])(?<![0-9].)(?:[ -]?[0-9]){12,18}",
    "ssn": r"(?<=[0-9])(?<![0-9].)[0-9]{2}(?P<ssn_sep>[- ])[0-9]{2}(?P=ssn_sep)[0-9]{4}(?![0-9]|-[0-9])",
    "phone": r"(?<![0-9A-Za-z+].)(?:(?<=\+)[1-9](?:[ .-]?\(?[0-9]\)?){7,14}"
             r"|(?<=1)[ .-](?:\([0-9]{3}\)[ .-]?|[0-9]{3}[ .-])[0-9]{3}[ .-][0-9]{4}"
             r"|(?<=\()[0-9]{3}\)[ .-]?[0-9]{3}[ .-][0-9]{4}"
             r"|(?<=[0-9])[0-9]{2}[ .-][0-9]{3}[ .-][0-9]{4})" + _PHONE_END,
    # The first octet's first digit is already consumed: the lookbehinds say which.
    "ipv4": r"(?<![0-9.].)(?:(?<=2)(?:5[0-5]|[0-4][0-9]|[0-9])?|(?<=1)(?:[0-9]{1,2})?"
            rf"|(?<=[3-9])[0-9]?|(?<=0))(?:\.{_OCTET}){{3}}(?![0-9]|\.[0-9])",
}
_LITERAL_PASSES = {  # each starts with a literal, which the engine finds fast
    "private_key": PK_BLOCK,
    "jwt": r"eyJ(?<![A-Za-z0-9_]eyJ)[A-Za-z0-9_-]+\.[A-Za-z0-9_-]+\.[A-Za-z0-9_-]*"
           r"(?:\.[A-Za-z0-9_-]+){0,2}",
    "aws_access_key": r"A[KS]IA(?<![A-Za-z0-9]A[KS]IA)[A-Z0-9]{16}(?![A-Za-z0-9])",
    "email": r"@(?<=[A-Za-z0-9_.%+-]@)(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.){1,8}"
             r"[A-Za-z]{2,63}(?![A-Za-z0-9-])",
    # A colon run that can be an address: "::" in it, or 7 colons; times have neither.
    # The lookbehind turns away JSON's own colons (after a quote) at once.
    "ipv6": r":(?:(?<=[0-9A-Fa-f]:)|(?=:))(?=:|[0-9A-Fa-f:.]*::|(?:[0-9A-Fa-f.]*:){6})[0-9A-Fa-f:.]*",
}
_PREFILTER = {"private_key": "\\-", "jwt": "J", "aws_access_key": "A", "email": "@", "ipv6": ":"}


@dataclass(frozen=True, slots=True)
class Compiled:
    prefilter: re.Pattern[str]
    passes: tuple[tuple[str, re.Pattern[str]], ...]
    blanked_passes: tuple[tuple[str, re.Pattern[str]], ...]
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
        # Most digits sit inside runs, or in short runs (ids, years): one lookbehind and
        # one lookahead turn those away before any alternative is tried. An IBAN's
        # check digits are followed by letters, so it comes before the lookahead.
        alts = "|".join(f"(?P<{n}>{_DIGIT_ALTS[n]})" for n in digit_names if n != "iban")
        alts = f"(?=[0-9 ().+-]{{6}})(?:{alts})" if alts else ""
        if "iban" in digit_names:
            alts = f"(?P<iban>{_DIGIT_ALTS['iban']})" + ("|" + alts if alts else "")
        passes.append(("digits", re.compile(f"[0-9+(](?<![0-9].)(?:{alts})")))
    chars = {_PREFILTER.get(n, "0-9+(") for n in names}
    blanked = tuple((n, re.compile(_PK_BLANKED) if n == "private_key" else rx) for n, rx in passes)
    return Compiled(
        prefilter=re.compile("[" + "".join(sorted(chars)) + "]"),
        passes=tuple(passes), blanked_passes=blanked, digit_names=digit_names,
        single=MappingProxyType({n: re.compile(DETECTORS[n].pattern) for n in digit_names}))


_CHECKS = {d.name: None if d.check is _accept else d.check for d in _ALL}
_LOCAL_REVERSED = re.compile(r"[A-Za-z0-9_.%+-]{1,64}")
_IPV6 = re.compile(DETECTORS["ipv6"].pattern)


def _scan_digits(c: Compiled, s: str, rx: re.Pattern[str], add: Callable) -> None:
    search = rx.search
    m = search(s)
    while m is not None:
        name, start = m.lastgroup, m.start()
        assert name is not None
        if name == "iban":  # found at its check digits
            start -= 2
        check = _CHECKS[name]
        end = m.end() if check is None else check(s, start, m.end())
        if end <= start:
            # The candidate failed its check, but another kind may start at the same
            # place ("555 123 4567 8901" is no card, yet holds a phone number).
            start = m.start()
            for other in c.digit_names:
                if other not in (name, "iban") and (m2 := c.single[other].match(s, start)):
                    end = DETECTORS[other].check(s, start, m2.end())
                    if end > start:
                        name = other
                        break
            if end <= start:
                m = search(s, start + 1)
                continue
        add((start, end, name))
        m = search(s, end)


def _ipv6_match(s: str, m: re.Match[str]) -> tuple[int, int, str] | None:
    # Found at its first colon: the first group (at most 4 hex digits) is behind it.
    start = m.start()
    while start > 0 and m.start() - start < 4 and s[start - 1] in "0123456789abcdefABCDEF":
        start -= 1
    m2 = _IPV6.match(s, start)
    if m2 is None:
        return None
    end = _check_ipv6(s, start, m2.end())
    return (start, end, "ipv6") if end > start else None


_U_ESCAPE = re.compile(r"\\u[0-9a-fA-F]{4}")
_ESCAPE = re.compile(r"\\[/bfnrt]")  # JSON's; "\4" in a Windows path is no escape


def blank_escapes(s: str) -> str:
    """`s` with each JSON escape turned into as many \x01, a break character like
    every character such escapes stand for; offsets are kept. An escaped quote becomes
    \x02\x02 instead: a key block ends there, as it would at the quote itself."""
    s = s.replace("\\\\", "\x01\x01").replace('\\"', "\x02\x02")
    return _ESCAPE.sub("\x01\x01", _U_ESCAPE.sub("\x01" * 6, s))


def _escapes(s: str, i: int) -> bool:
    """Whether the backslash at s[i] starts an escape: an odd run of backslashes ends
    there. In "\\\\fe80::1" the "f" is a plain letter, in both readings of the text
    (as it is, and as escaped JSON), so it stays in the span as the JSON path keeps it."""
    k = i
    while k >= 0 and s[k] == "\\":
        k -= 1
    return (i - k) % 2 == 1


def _outside_escapes(s: str, span: tuple[int, int, str]) -> tuple[int, int, str] | None:
    """The span without the escape it starts in ("\nbob@..." -> "bob@...") or ends in
    (a key block cut at an escaped quote, "...\\" + '"')."""
    start, end, name = span
    u = s.rfind("\\u", max(0, start - 5), start + 1)
    if u >= 0 and _U_ESCAPE.match(s, u) and _escapes(s, u):
        start = max(start, u + 6)
    elif start > 0 and s[start] in "bfnrt" and _escapes(s, start - 1):
        start += 1
    if end < len(s):  # at the very end of the text no escape can be cut in half
        k = end
        while k > start and s[k - 1] == "\\":
            k -= 1
        end -= (end - k) % 2  # an odd run of backslashes ends with half an escape
    return (start, end, name) if start < end else None


def scan(c: Compiled, s: str, mode: str = "text") -> list[tuple[int, int, str]]:
    """Confirmed secrets in `s` as sorted, disjoint (start, end, detector) spans.

    mode "json": `s` is serialised JSON with escapes blanked (see masker._mask_tokens).
    In mode "text", a text with backslashes may be escaped JSON (a streamed body, a JSON
    column) or not: it is scanned both as it is and with escapes blanked, and no span
    starts inside an escape, so masking keeps escaped text valid.
    """
    if c.prefilter.search(s) is None:
        return []
    spans, found_by = _find(c, s, c.passes if mode == "text" else c.blanked_passes)
    if mode == "text" and "\\" in s:
        more, _ = _find(c, blank_escapes(s), c.blanked_passes)
        spans = [sp for sp in map(_outside_escapes, [s] * (len(spans) + len(more)), spans + more) if sp]
        found_by = 2
    if len(spans) < 2:
        return spans
    if found_by > 1:
        spans.sort()
    # Matches may overlap (a card inside an email, an IPv4 inside an IPv6, an email
    # whose local part runs back into a key block): everything found is masked, the
    # match that starts first (then the longest) keeping the characters they share.
    kept = [spans[0]]
    for sp in spans[1:]:
        last = kept[-1]
        if sp[0] >= last[1]:
            kept.append(sp)
        elif sp[1] > last[1]:
            kept[-1:] = [sp] if sp[0] == last[0] else [last, (last[1], sp[1], sp[2])]
    return kept


def _find(c: Compiled, s: str, passes: tuple) -> tuple[list[tuple[int, int, str]], int]:
    """Every pass over `s`: the spans, and how many passes found any."""
    spans: list[tuple[int, int, str]] = []
    add = spans.append
    found_by = 0
    for kind, rx in passes:
        before = len(spans)
        if kind == "digits":
            _scan_digits(c, s, rx, add)
        elif kind == "email":
            # Found at the "@": the local part is behind it, matched on the reversed
            # 64 characters before (one regex call, not a Python loop per character).
            # A longer run of local-part characters is masked in its last 64.
            for m in rx.finditer(s):
                at = m.start()
                local = _LOCAL_REVERSED.match(s[max(0, at - 64):at][::-1])
                add((at - local.end(), m.end(), kind))  # type: ignore[union-attr]
        elif kind == "ipv6":
            for m in rx.finditer(s):
                if (span := _ipv6_match(s, m)) is not None:
                    add(span)
        else:
            for m in rx.finditer(s):
                add((m.start(), m.end(), kind))
        found_by += len(spans) > before
    return spans, found_by
