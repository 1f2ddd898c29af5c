"""Rule field paths are matched whole: ``$`` would let a key with a final newline through."""

from __future__ import annotations

import pytest

from campuswatch.collector.rules.fields import FieldPathError, resolve_field


@pytest.mark.parametrize("path", ["attributes.door\n", "event_type\n", "attributes.\n"])
def test_a_path_step_with_a_trailing_newline_is_refused(path: str) -> None:
    with pytest.raises(FieldPathError):
        resolve_field("event", path)


def test_the_same_paths_without_it_resolve() -> None:
    assert resolve_field("event", "attributes.door").path == "attributes.door"
    assert resolve_field("event", "event_type").path == "event_type"
