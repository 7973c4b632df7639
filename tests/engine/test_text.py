from engine.text import IncrementalText


def feed_all(dec: IncrementalText, pieces: list[bytes]) -> str:
    return "".join(dec.feed(p) for p in pieces) + dec.flush()


def test_utf8_split_across_tokens():
    data = "héllo ✓".encode()
    pieces = [data[i : i + 1] for i in range(len(data))]
    assert feed_all(IncrementalText(), pieces) == "héllo ✓"


def test_stop_string_spanning_tokens_is_cut_and_nothing_after_it_leaks():
    dec = IncrementalText(stop=["END"])
    out = [dec.feed(b"abc E"), dec.feed(b"N"), dec.feed(b"D tail")]
    assert "".join(out) == "abc "
    assert dec.stopped and dec.feed(b"more") == "" and dec.flush() == ""


def test_partial_stop_prefix_released_when_it_does_not_match():
    dec = IncrementalText(stop=["STOP"])
    assert dec.feed(b"ST") == ""  # held: could become STOP
    assert dec.feed(b"AR") == "STAR"
    assert not dec.stopped


def test_earliest_of_several_stops_wins():
    dec = IncrementalText(stop=["b", "a"])
    assert feed_all(dec, [b"xxab"]) == "xx"
