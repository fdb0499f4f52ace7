"""The SSE decoder reads upstream streams however the bytes are cut; the encoder writes our events."""

from __future__ import annotations

import time

import orjson
import pytest

from llmgw.infrastructure.sse import DONE, DONE_EVENT, SSEDecoder, SSELineTooLong, encode_event

LIMIT = 1 << 20

STREAM = (
    b": OPENROUTER PROCESSING\n\n"
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"}}]}\n\n'
    b": OPENROUTER PROCESSING\n\n"
    b'data: {"id":"c1","choices":[{"index":0,"delta":{"content":"lo"}}]}\n\n'
    b'data: {"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}\n\n'
    b"data: [DONE]\n\n"
)
EXPECTED = [
    b'{"id":"c1","choices":[{"index":0,"delta":{"content":"Hel"}}]}',
    b'{"id":"c1","choices":[{"index":0,"delta":{"content":"lo"}}]}',
    b'{"id":"c1","choices":[],"usage":{"prompt_tokens":3,"completion_tokens":2}}',
    DONE,
]


def decode_all(*chunks: bytes) -> list[bytes]:
    decoder = SSEDecoder(LIMIT)
    events: list[bytes] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.close())
    return events


def test_many_events_in_one_feed_all_come_out_in_order() -> None:
    assert SSEDecoder(LIMIT).feed(STREAM) == EXPECTED


def test_comment_lines_are_skipped() -> None:
    decoder = SSEDecoder(LIMIT)

    assert decoder.feed(b": OPENROUTER PROCESSING\n\n:keep-alive\n\n") == []
    assert decoder.feed(b'data: {"a":1}\n: between\n\n') == [b'{"a":1}']


def test_crlf_line_endings_are_read_like_lf() -> None:
    assert SSEDecoder(LIMIT).feed(STREAM.replace(b"\n", b"\r\n")) == EXPECTED


def test_a_crlf_split_between_feeds_still_ends_the_line() -> None:
    decoder = SSEDecoder(LIMIT)

    # A lone CR already ends a line; the LF after it is part of the same line end.
    assert decoder.feed(b'data: {"a":1}\r') == []
    assert decoder.feed(b"\n\r") == [b'{"a":1}']
    assert decoder.feed(b"\n") == []
    assert decoder.feed(b'data: {"b":2}\n\n') == [b'{"b":2}']


def test_several_data_lines_in_one_event_are_joined_with_a_newline() -> None:
    events = SSEDecoder(LIMIT).feed(b"data: first\ndata: second\ndata:\ndata: fourth\n\n")

    assert events == [b"first\nsecond\n\nfourth"]


def test_only_one_space_after_the_colon_is_stripped() -> None:
    assert SSEDecoder(LIMIT).feed(b"data:no-space\n\ndata:  two-spaces\n\n") == [b"no-space", b" two-spaces"]


def test_event_id_and_retry_fields_are_ignored() -> None:
    events = SSEDecoder(LIMIT).feed(b'event: message\nid: 42\nretry: 1000\ndata: {"a":1}\n\nevent: ping\n\n')

    assert events == [b'{"a":1}']


def test_an_event_split_across_feeds_at_any_byte_comes_out_whole() -> None:
    for cut in range(1, len(STREAM)):
        assert decode_all(STREAM[:cut], STREAM[cut:]) == EXPECTED, f"cut at byte {cut}"


def test_a_stream_fed_one_byte_at_a_time_gives_the_same_events() -> None:
    assert decode_all(*(STREAM[i : i + 1] for i in range(len(STREAM)))) == EXPECTED


def test_an_event_is_not_returned_before_its_blank_line_arrives() -> None:
    decoder = SSEDecoder(LIMIT)

    assert decoder.feed(b'data: {"a":1}\n') == []
    assert decoder.feed(b"\n") == [b'{"a":1}']


def test_close_flushes_a_last_event_without_its_blank_line() -> None:
    decoder = SSEDecoder(LIMIT)

    assert decoder.feed(b'data: {"a":1}\n\ndata: {"b":2}') == [b'{"a":1}']
    assert decoder.close() == [b'{"b":2}']


def test_close_flushes_a_last_event_whose_line_ended_but_not_the_event() -> None:
    decoder = SSEDecoder(LIMIT)

    assert decoder.feed(b'data: {"b":2}\n') == []
    assert decoder.close() == [b'{"b":2}']


def test_close_on_a_cleanly_ended_stream_gives_nothing_more() -> None:
    decoder = SSEDecoder(LIMIT)
    decoder.feed(STREAM)

    assert decoder.close() == []


def test_close_after_only_comments_gives_nothing() -> None:
    decoder = SSEDecoder(LIMIT)
    decoder.feed(b": OPENROUTER PROCESSING\n")

    assert decoder.close() == []


def test_encode_event_writes_one_data_line_and_a_blank_line() -> None:
    payload = {"id": "gen-1", "choices": [{"index": 0, "delta": {"content": "two\nlines"}}], "usage": None}

    encoded = encode_event(payload)

    assert encoded.startswith(b"data: ")
    assert encoded.endswith(b"\n\n")
    assert encoded.count(b"\n") == 2
    assert orjson.loads(encoded[len(b"data: ") : -2]) == payload


def test_encoded_events_decode_back_to_the_same_payloads() -> None:
    payloads = [
        {"error": {"message": "boom", "type": "upstream_error", "param": None, "code": None}},
        {"é": "ü"},
    ]
    stream = b"".join(encode_event(p) for p in payloads) + DONE_EVENT

    events = SSEDecoder(LIMIT).feed(stream)

    assert [orjson.loads(e) for e in events[:-1]] == payloads
    assert events[-1] == DONE
    assert DONE_EVENT == b"data: [DONE]\n\n"


def test_a_line_longer_than_the_limit_is_refused_with_a_clear_error() -> None:
    decoder = SSEDecoder(1000)
    decoder.feed(b"data: " + b"x" * 600)

    with pytest.raises(SSELineTooLong, match="longer than 1000 bytes"):
        decoder.feed(b"x" * 600)


def test_an_event_whose_data_lines_add_up_past_the_limit_is_refused() -> None:
    decoder = SSEDecoder(1000)

    with pytest.raises(SSELineTooLong, match="longer than 1000 bytes"):
        decoder.feed(
            b"data: " + b"y" * 400 + b"\n" + b"data: " + b"y" * 400 + b"\n" + b"data: " + b"y" * 400 + b"\n"
        )


def test_an_event_just_under_the_limit_comes_out_whole() -> None:
    payload = b"z" * 990
    assert SSEDecoder(1000).feed(b"data: " + payload + b"\n\n") == [payload]


def test_one_huge_event_arriving_in_small_pieces_costs_about_what_it_costs_in_one_piece() -> None:
    """Each byte is scanned once: a 20 MB event fed 64 KiB at a time (as a socket hands it over) must not
    be re-joined and re-scanned on every feed (that took seconds for 50 MB)."""
    event = b"data: " + b'{"content":"' + b"a" * 20_000_000 + b'"}' + b"\n\n"
    pieces = [event[at : at + 65536] for at in range(0, len(event), 65536)]

    started = time.perf_counter()
    assert len(SSEDecoder(1 << 26).feed(event)[0]) == len(event) - 8
    whole = time.perf_counter() - started
    started = time.perf_counter()
    decoder = SSEDecoder(1 << 26)
    out = [e for piece in pieces for e in decoder.feed(piece)]
    pieced = time.perf_counter() - started

    assert len(out) == 1
    assert len(out[0]) == len(event) - 8
    assert pieced < 10 * whole + 0.5, f"{pieced:.2f} s in pieces against {whole:.2f} s whole"


def test_events_with_other_fields_or_multi_line_data_in_one_feed_are_read_in_full() -> None:
    """Whole events of one data line each are read quickly; anything else in a feed is read line by line,
    so an `event:` field, a `data:` without its space or several data lines lose nothing."""
    feed = b'data: {"a":1}\n\nevent: message\ndata: {"b":2}\n\ndata:{"c":3}\n\ndata: x\ndata: y\n\n: note\n\n'

    assert SSEDecoder(LIMIT).feed(feed) == [b'{"a":1}', b'{"b":2}', b'{"c":3}', b"x\ny"]


def test_a_long_event_among_short_ones_is_still_refused() -> None:
    with pytest.raises(SSELineTooLong):
        SSEDecoder(100).feed(b"data: a\n\ndata: " + b"z" * 200 + b"\n\n")
