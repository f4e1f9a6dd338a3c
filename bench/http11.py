"""HTTP/1.1 messages off a byte stream, for the bench's own client and Slack stand-in.

Both sit on raw asyncio transports so that the measuring apparatus spends a few
microseconds of CPU per request, not the few hundred that a full client or server
framework costs. :class:`Parser` turns the bytes a connection receives into complete
messages: a request line or a status line, headers, and a body framed by
``Content-Length``, by ``Transfer-Encoding: chunked``, or (responses only) by the end of
the connection. It keeps no more state than a buffer, so a message split anywhere, or
several in one read, come out the same.
"""

from __future__ import annotations

from typing import NamedTuple

CRLF = b"\r\n"
HEAD_END = b"\r\n\r\n"
MAX_HEAD = 64 * 1024


class ProtocolError(Exception):
    """The peer sent something that is not HTTP/1.1 as this parser knows it."""


class Message(NamedTuple):
    """One request or response. ``start`` is the first line's three parts: method, target,
    version for a request; version, status code, reason for a response. Header names are
    lower-case."""

    start: tuple[bytes, bytes, bytes]
    headers: dict[bytes, bytes]
    body: bytes

    @property
    def status(self) -> int:
        return int(self.start[1])

    @property
    def keep_alive(self) -> bool:
        """Whether the connection carries another message after this one."""
        connection = self.headers.get(b"connection", b"").lower()
        if self.start[0] == b"HTTP/1.0" or self.start[2] == b"HTTP/1.0":
            return b"keep-alive" in connection
        return b"close" not in connection


def parse_head(head: bytes) -> tuple[tuple[bytes, bytes, bytes], dict[bytes, bytes]]:
    """The first line's three parts and the headers (lower-case names) of ``head``,
    which ends before the blank line."""
    lines = head.split(CRLF)
    parts = lines[0].split(b" ", 2)
    if len(parts) == 2:  # a status line may have no reason
        parts.append(b"")
    if len(parts) != 3:
        raise ProtocolError(f"bad first line {lines[0][:80]!r}")
    headers: dict[bytes, bytes] = {}
    for line in lines[1:]:
        name, colon, value = line.partition(b":")
        if not colon:
            raise ProtocolError(f"bad header line {line[:80]!r}")
        key = name.lower()  # no space is allowed before the colon
        if key in headers:  # repeated: joined, as RFC 9110 allows for lists
            headers[key] += b", " + value.strip()
        else:
            headers[key] = value.strip()
    return (parts[0], parts[1], parts[2]), headers


def _chunked(buffer: bytes, start: int) -> tuple[bytes, int] | None:
    """The de-chunked body that starts at ``start``, and where the message ends; None
    while it is incomplete."""
    pieces: list[bytes] = []
    at = start
    while True:
        line_end = buffer.find(CRLF, at)
        if line_end < 0:
            return None
        size_text = buffer[at:line_end].split(b";", 1)[0].strip()
        try:
            size = int(size_text, 16)
        except ValueError:
            raise ProtocolError(f"bad chunk size {size_text[:20]!r}") from None
        if size == 0:
            # trailers, if any, then the blank line
            if buffer[line_end + 2:line_end + 4] == CRLF:
                return b"".join(pieces), line_end + 4
            trailers_end = buffer.find(HEAD_END, line_end)
            if trailers_end < 0:
                return None
            return b"".join(pieces), trailers_end + 4
        data_start = line_end + 2
        data_end = data_start + size
        if len(buffer) < data_end + 2:
            return None
        if buffer[data_end:data_end + 2] != CRLF:
            raise ProtocolError("chunk not followed by CRLF")
        pieces.append(buffer[data_start:data_end])
        at = data_end + 2


class Parser:
    """Complete messages out of the bytes of one connection.

    ``response``: the peer is a server, so a body may be framed by the connection's end,
    and 1xx, 204 and 304 answers have none (the bench sends no ``HEAD``).
    """

    __slots__ = ("_buffer", "_head", "_length", "_response")

    def __init__(self, *, response: bool) -> None:
        self._response = response
        self._buffer = b""
        # the parsed head of the message being received, where its body starts, and the
        # body's length: -1 chunked, -2 until the connection ends
        self._head: tuple[tuple[bytes, bytes, bytes], dict[bytes, bytes], int] | None = None
        self._length = 0

    def feed(self, data: bytes) -> list[Message]:
        """Take ``data`` and return the messages it completes (often one, maybe none)."""
        # bytes, not a bytearray: the usual read holds one whole message, and slicing it
        # directly saves two copies
        buffer = self._buffer + data if self._buffer else data
        out: list[Message] = []
        while buffer:
            if self._head is None:
                end = buffer.find(HEAD_END)
                if end < 0:
                    if len(buffer) > MAX_HEAD:
                        raise ProtocolError("head too long")
                    break
                start, headers = parse_head(buffer[:end])
                self._head = (start, headers, end + 4)
                self._length = self._body_length(start, headers)
            start, headers, body_at = self._head
            if self._length >= 0:
                end_at = body_at + self._length
                if len(buffer) < end_at:
                    break
                body = buffer[body_at:end_at]
            elif self._length == -1:
                found = _chunked(buffer, body_at)
                if found is None:
                    break
                body, end_at = found
            else:  # until the connection ends: see eof()
                break
            buffer = buffer[end_at:]
            self._head = None
            out.append(Message(start, headers, body))
        self._buffer = buffer
        return out

    def eof(self) -> Message | None:
        """The connection ended: the message it framed, if one was being read that way.
        Any other partial message is lost (the caller counts it as an error)."""
        if self._head is not None and self._length == -2:
            start, headers, body_at = self._head
            body = self._buffer[body_at:]
            self._buffer = b""
            self._head = None
            return Message(start, headers, body)
        return None

    @property
    def idle(self) -> bool:
        """No part of a message is waiting in the buffer."""
        return not self._buffer and self._head is None

    def _body_length(self, start: tuple[bytes, bytes, bytes],
                     headers: dict[bytes, bytes]) -> int:
        """The body's length; -1 for chunked, -2 for until the connection ends."""
        if self._response:
            code = start[1]
            if code[:1] == b"1" or code in (b"204", b"304"):
                return 0
        encoding = headers.get(b"transfer-encoding")
        if encoding is not None:
            if encoding.lower().rsplit(b",", 1)[-1].strip() == b"chunked":
                return -1
            if not self._response:
                raise ProtocolError("a request body without chunked framing")
            return -2
        length = headers.get(b"content-length")
        if length is not None:
            try:
                value = int(length)
            except ValueError:
                raise ProtocolError(f"bad Content-Length {length[:20]!r}") from None
            if value < 0:
                raise ProtocolError("negative Content-Length")
            return value
        return -2 if self._response else 0
