"""An incremental JSON checker: fed a streamed answer's text chunk by chunk, it says whether
the text so far can still become valid JSON, where it stopped being so, or that it is done.

A tokenizer-level state machine (strings with their escapes and surrogate pairs, numbers,
literals, nesting), strict as orjson is: the checks the output guard makes with orjson on a
whole answer, made on a stream without ever re-reading what came before. Each chunk costs
O(its length): runs of string text, digits and whitespace are skipped by compiled regular
expressions, and the only memory kept is the stack of open containers.

Libraries considered: jiter's partial mode re-parses the whole prefix at every chunk
(O(n^2) over a stream); ijson is incremental but reports no offset, wants bytes, and its
fast backend is a C extension to ship for a few hundred lines of Python.
"""

from __future__ import annotations

import math
import re
from typing import Final

PARTIAL: Final = "partial"  # still possibly valid
INVALID: Final = "invalid"  # cannot become valid JSON: see `offset` and `reason`
COMPLETE: Final = "complete"  # one whole JSON value (more whitespace may follow)

# orjson refuses deeper nesting ("recursion limit exceeded"): so does the checker, so that
# what it calls complete is what the guard's orjson.loads accepts
MAX_DEPTH: Final = 1024

# parser states
_VALUE = 0  # a value must come: at the start, after ':', after ',' in an array
_VALUE_OR_CLOSE = 1  # just after '[': a value or ']'
_KEY = 2  # after ',' in an object: a key
_KEY_OR_CLOSE = 3  # just after '{': a key or '}'
_COLON = 4
_AFTER = 5  # a value ended inside a container: ',' or its close
_STRING = 6
_ESCAPE = 7  # after a backslash in a string
_UNICODE = 8  # inside \uXXXX
_NUMBER = 9
_LITERAL = 10  # inside true / false / null
_DONE = 11  # the top-level value is complete
_INVALID = 12

# number sub-states; the accepting ones may end the number
_N_MINUS, _N_ZERO, _N_INT, _N_DOT, _N_FRAC, _N_E, _N_ESIGN, _N_EXP = range(8)
_N_ACCEPTING = frozenset({_N_ZERO, _N_INT, _N_FRAC, _N_EXP})

_WS = frozenset(" \t\n\r")
_DIGITS = frozenset("0123456789")
_HEX = {c: int(c, 16) for c in "0123456789abcdefABCDEF"}
_ESCAPES = frozenset('"\\/bfnrt')
_LITERALS = {"t": "rue", "f": "alse", "n": "ull"}
# what a string may hold unescaped: not its quote, a backslash, a control character, or a
# lone surrogate (not valid UTF-8: orjson refuses it)
_STRING_RUN = re.compile(r'[^"\\\x00-\x1f\ud800-\udfff]+')
_WS_RUN = re.compile(r"[ \t\n\r]+")
_DIGIT_RUN = re.compile(r"[0-9]+")


class JsonStreamChecker:
    """Feed it text with `feed()`, then call `finish()` when the stream ends."""

    __slots__ = (
        "_code",
        "_hex",
        "_high",
        "_key",
        "_literal",
        "_number",
        "_number_at",
        "_number_text",
        "_stack",
        "_state",
        "first",
        "offset",
        "reason",
        "seen",
    )

    def __init__(self) -> None:
        self._state = _VALUE
        self._stack: list[bool] = []  # open containers, innermost last: True for an object
        self._key = False  # the string being read is an object key
        self._number = _N_MINUS
        self._number_text: list[str] = []  # a number's text read in earlier chunks
        self._number_at = 0  # where the number being read starts in the whole text
        self._literal = ""  # what a literal still needs
        self._hex = 0  # hex digits a \u escape still needs
        self._code = 0  # the \u escape's value so far
        self._high = False  # a high surrogate escape was read: its low half must follow
        self.seen = 0  # characters fed so far
        self.first: str | None = None  # the first non-whitespace character
        self.offset: int | None = None  # where the text became invalid
        self.reason: str | None = None  # why

    @property
    def status(self) -> str:
        if self._state == _INVALID:
            return INVALID
        return COMPLETE if self._state == _DONE else PARTIAL

    def feed(self, text: str) -> str:
        """Read the next chunk: PARTIAL, INVALID or COMPLETE (a top-level number is only
        known to be complete when something follows it, or at `finish()`)."""
        state = self._state
        if state == _INVALID:
            return INVALID
        i, n = 0, len(text)
        if self.first is None:
            m = _WS_RUN.match(text)
            i = m.end() if m else 0
            if i < n:
                self.first = text[i]
        stack = self._stack
        number_from = 0  # where the number being read starts in this chunk
        while i < n:
            c = text[i]
            if state == _STRING:
                if not self._high:
                    m = _STRING_RUN.match(text, i)
                    if m is not None:
                        i = m.end()
                        if i == n:
                            break
                        c = text[i]
                if c == "\\":
                    state = _ESCAPE
                elif self._high:
                    return self._fail(i, "a high surrogate escape without its low half")
                elif c == '"':
                    if self._key:
                        state = _COLON
                    else:
                        state = _AFTER if stack else _DONE
                elif c < " ":
                    return self._fail(i, "a control character in a string")
                else:
                    return self._fail(i, "a lone surrogate in a string")
                i += 1
            elif c in _WS and (state < _STRING or state == _DONE):
                m = _WS_RUN.match(text, i)
                i = m.end() if m else i + 1
            elif state == _AFTER:
                if c == ",":
                    state = _KEY if stack[-1] else _VALUE
                elif c == ("}" if stack[-1] else "]"):
                    stack.pop()
                    state = _AFTER if stack else _DONE
                else:
                    return self._fail(i, "expected ',' or the end of the container")
                i += 1
            elif state <= _VALUE_OR_CLOSE:
                if c == '"':
                    state, self._key = _STRING, False
                elif c == "{" or c == "[":
                    if len(stack) >= MAX_DEPTH:
                        return self._fail(i, f"nested deeper than {MAX_DEPTH}")
                    stack.append(c == "{")
                    state = _KEY_OR_CLOSE if c == "{" else _VALUE_OR_CLOSE
                elif c in _DIGITS or c == "-":
                    state, number_from, self._number_at = _NUMBER, i, self.seen + i
                    self._number = _N_ZERO if c == "0" else _N_MINUS if c == "-" else _N_INT
                elif c in _LITERALS:
                    state, self._literal = _LITERAL, _LITERALS[c]
                elif c == "]" and state == _VALUE_OR_CLOSE:
                    stack.pop()
                    state = _AFTER if stack else _DONE
                else:
                    return self._fail(i, "expected a JSON value")
                i += 1
            elif state == _NUMBER:
                sub = self._number
                if c in _DIGITS:
                    if sub == _N_ZERO:
                        return self._fail(i, "a number with a leading zero")
                    if sub == _N_MINUS:
                        sub = _N_ZERO if c == "0" else _N_INT
                    elif sub == _N_DOT:
                        sub = _N_FRAC
                    elif sub == _N_E or sub == _N_ESIGN:
                        sub = _N_EXP
                    m = _DIGIT_RUN.match(text, i + 1) if sub != _N_ZERO else None
                    i = m.end() if m else i + 1
                elif c == "." and (sub == _N_ZERO or sub == _N_INT):
                    sub = _N_DOT
                    i += 1
                elif (c == "e" or c == "E") and sub in (_N_ZERO, _N_INT, _N_FRAC):
                    sub = _N_E
                    i += 1
                elif (c == "+" or c == "-") and sub == _N_E:
                    sub = _N_ESIGN
                    i += 1
                elif sub in _N_ACCEPTING:
                    if self._overflows(text[number_from:i]):
                        too_large = "a number too large for a double"
                        return self._fail(0, too_large, at=self._number_at)
                    state = _AFTER if stack else _DONE  # c is read again in that state
                else:
                    return self._fail(i, "an incomplete number")
                self._number = sub
            elif state == _LITERAL:
                literal = self._literal
                if c != literal[0]:
                    return self._fail(i, "an unknown literal")
                literal = literal[1:]
                self._literal = literal
                if not literal:
                    state = _AFTER if stack else _DONE
                i += 1
            elif state == _ESCAPE:
                if c == "u":
                    state, self._hex, self._code = _UNICODE, 4, 0
                elif self._high:
                    return self._fail(i, "a high surrogate escape without its low half")
                elif c in _ESCAPES:
                    state = _STRING
                else:
                    return self._fail(i, "an unknown escape in a string")
                i += 1
            elif state == _UNICODE:
                digit = _HEX.get(c)
                if digit is None:
                    return self._fail(i, "a \\u escape that is not four hex digits")
                self._code = self._code * 16 + digit
                self._hex -= 1
                i += 1
                if self._hex == 0:
                    state = _STRING
                    low = 0xDC00 <= self._code <= 0xDFFF
                    if self._high:
                        if not low:
                            return self._fail(i - 1, "a high surrogate escape without its low half")
                        self._high = False
                    elif low:
                        return self._fail(i - 1, "a low surrogate escape without its high half")
                    elif 0xD800 <= self._code <= 0xDBFF:
                        self._high = True
            elif state == _KEY_OR_CLOSE or state == _KEY:
                if c == '"':
                    state, self._key = _STRING, True
                elif c == "}" and state == _KEY_OR_CLOSE:
                    stack.pop()
                    state = _AFTER if stack else _DONE
                else:
                    return self._fail(i, "expected an object key")
                i += 1
            elif state == _COLON:
                if c != ":":
                    return self._fail(i, "expected ':' after an object key")
                state = _VALUE
                i += 1
            else:  # _DONE
                return self._fail(i, "more text after the JSON value")
        if state == _NUMBER:
            self._number_text.append(text[number_from:])
        self._state = state
        self.seen += n
        return COMPLETE if state == _DONE else PARTIAL

    def finish(self) -> str:
        """The stream ended: COMPLETE, or INVALID (it stopped before the value was whole)."""
        state = self._state
        if state == _NUMBER and not self._stack and self._number in _N_ACCEPTING:
            if self._overflows(""):
                return self._fail(0, "a number too large for a double", at=self._number_at)
            self._state = state = _DONE
        if state == _DONE or state == _INVALID:
            return self.status
        why = "the answer is empty" if self.first is None else "the JSON ends before it is complete"
        return self._fail(0, why, at=self.seen)

    def _overflows(self, tail: str) -> bool:
        """The number just read is one orjson refuses: beyond a double's range (infinity).
        Only a number with an exponent or over 308 characters can be."""
        earlier = self._number_text
        number = "".join(earlier) + tail if earlier else tail
        earlier.clear()
        big = len(number) > 308 or "e" in number or "E" in number
        return big and math.isinf(float(number))

    def _fail(self, i: int, reason: str, at: int | None = None) -> str:
        self._state = _INVALID
        self.offset = self.seen + i if at is None else at
        self.reason = reason
        return INVALID
