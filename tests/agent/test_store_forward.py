from __future__ import annotations

from pathlib import Path

from campuswatch.agent.settings import ConfigError, load_settings
from campuswatch.agent.store_forward import StoreAndForwardQueue
from campuswatch.wire.codec import MAX_PAYLOAD_BYTES
from campuswatch.wire.topics import build_topic


def test_messages_survive_a_restart_in_order(tmp_path: Path) -> None:
    queue = StoreAndForwardQueue(tmp_path / "q.sqlite", max_bytes=1_000_000)
    for n in range(5):
        queue.put(f"t/{n}", f"payload {n}".encode())
    queue.close()
    reopened = StoreAndForwardQueue(tmp_path / "q.sqlite", max_bytes=1_000_000)
    assert reopened.depth == 5
    assert [m.topic for m in reopened.peek(0, 10)] == [f"t/{n}" for n in range(5)]


def test_peek_after_a_sequence_and_remove_on_ack(tmp_path: Path) -> None:
    queue = StoreAndForwardQueue(tmp_path / "q.sqlite", max_bytes=1_000_000)
    for n in range(4):
        queue.put("t", bytes([n]))
    first_two = queue.peek(0, 2)
    rest = queue.peek(first_two[-1].seq, 10)
    assert [m.payload for m in rest] == [b"\x02", b"\x03"]
    queue.remove(first_two[0].seq)
    queue.remove(first_two[0].seq)  # a duplicate ack changes nothing
    assert queue.depth == 3
    assert not queue.contains(first_two[0].seq)


def test_full_queue_drops_the_oldest_and_counts_them_persistently(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    queue = StoreAndForwardQueue(path, max_bytes=1000)
    for n in range(30):
        queue.put("t", f"{n:03d}".encode() * 30)  # 91 bytes each with the topic
    assert queue.size_bytes <= 1000
    assert queue.depth == 10
    assert queue.dropped_total == 20
    assert queue.peek(0, 1)[0].payload.startswith(b"020")
    queue.close()
    assert StoreAndForwardQueue(path, max_bytes=1000).dropped_total == 20


def test_messages_for_another_device_are_dropped_and_counted(tmp_path: Path) -> None:
    path = tmp_path / "q.sqlite"
    queue = StoreAndForwardQueue(path, max_bytes=1_000_000)
    queue.put("cw/v1/s/pc-golden/health", b"old")
    queue.put("cw/v1/s/pc-golden2/health", b"prefix look-alike")
    queue.put("cw/v1/s/pc-golden/av", b"old av")
    queue.put("cw/v1/s/pc-clone/health", b"mine")
    assert queue.drop_not_under("cw/v1/s/pc-clone/") == 3
    assert [m.payload for m in queue.peek(0, 10)] == [b"mine"]
    assert (queue.depth, queue.dropped_total) == (1, 3)
    assert queue.size_bytes == len("cw/v1/s/pc-clone/health") + len(b"mine")
    queue.close()
    assert StoreAndForwardQueue(path, max_bytes=1_000_000).dropped_total == 3


def _smallest_accepted_queue_bytes() -> int:
    low, high = 1, 64 * 1024 * 1024  # the default is accepted
    while low < high:
        middle = (low + high) // 2
        try:
            load_settings(overrides={"queue": {"max_bytes": middle}}, environ={})
            high = middle
        except ConfigError:
            low = middle + 1
    return low


def test_the_smallest_allowed_queue_holds_the_largest_message(tmp_path: Path) -> None:
    """Issue 18 item 5: at 64 KiB a ~70 KB inventory pushed everything out and was itself
    pushed out by the next health message; inventory is only re-sent when it changes."""
    queue = StoreAndForwardQueue(tmp_path / "q.sqlite", _smallest_accepted_queue_bytes())
    site, device = "hcm-q1-thcs-nguyen-van-troi", "pc-0123456789abcdef"
    queue.put(build_topic(site, device, "health"), b"h" * 2000)
    largest = b"x" * MAX_PAYLOAD_BYTES
    queue.put(build_topic(site, device, "inventory"), largest)
    for _ in range(20):
        queue.put(build_topic(site, device, "health"), b"h" * 2000)
    assert largest in [message.payload for message in queue.peek(0, 100)]


def test_a_message_larger_than_the_queue_is_refused_without_emptying_it(tmp_path: Path) -> None:
    queue = StoreAndForwardQueue(tmp_path / "q.sqlite", max_bytes=1000)
    for n in range(5):
        queue.put("t", bytes([n]) * 100)
    assert queue.put("t", b"x" * 2000) == 1  # only the oversized message itself is lost
    assert queue.depth == 5 and queue.dropped_total == 1


def test_queue_connection_keeps_a_small_page_cache(tmp_path: Path) -> None:
    """Issue 18: SQLite's default page cache is 2 MB per connection; the queue is read front
    to back and mostly empty, so it asks for 256 KiB (a smaller one measured no better)."""
    queue = StoreAndForwardQueue(tmp_path / "outbox.sqlite", 1_000_000)
    try:
        assert queue._db.execute("PRAGMA cache_size").fetchone()[0] == -256
    finally:
        queue.close()
