"""The site tree cannot loop: cycles are refused, and one already stored neither hangs the
subtree query nor goes unnoticed (issue 13, item 4). SQLite and PostgreSQL."""

from __future__ import annotations

import pytest
from sqlalchemy import update
from sqlalchemy.orm import Session

from campuswatch.collector.db.models import Site
from campuswatch.collector.register.assets import (
    SiteCycleError,
    check_site_parent,
    describe_site_cycle,
    find_site_cycles,
    site_ancestor_ids,
    site_subtree_ids,
)

TREE = (
    ("hn", None, "province"),
    ("hn-bd", "hn", "district"),
    ("bd-a", "hn-bd", "school"),
    ("bd-a-lab", "bd-a", "room"),
    ("hn-cg", "hn", "district"),
    ("cg-c", "hn-cg", "school"),
)


@pytest.fixture
def tree(session: Session) -> Session:
    for site_id, parent_id, level in TREE:
        session.add(Site(id=site_id, parent_id=parent_id, level=level, name=site_id))
        session.flush()
    session.commit()
    return session


def _set_parent(session: Session, site_id: str, parent_id: str) -> None:
    """Written straight to the table, as a bad migration or a hand edit would."""
    session.execute(update(Site).where(Site.id == site_id).values(parent_id=parent_id))
    session.commit()


def test_a_sound_tree_has_subtrees_ancestors_and_no_cycle(tree: Session) -> None:
    assert set(site_subtree_ids(tree, "hn-bd")) == {"hn-bd", "bd-a", "bd-a-lab"}
    assert site_ancestor_ids(tree, "bd-a-lab") == ["bd-a", "hn-bd", "hn"]
    assert find_site_cycles(tree) == []


def test_the_subtree_query_ends_on_a_stored_cycle(tree: Session) -> None:
    _set_parent(tree, "hn", "bd-a-lab")
    _set_parent(tree, "cg-c", "cg-c")  # a site that is its own parent

    # Every site hangs below the loop except cg-c, which left hn-cg to be its own parent.
    everything = {site_id for site_id, _, _ in TREE}
    assert sorted(site_subtree_ids(tree, "bd-a")) == sorted(everything - {"cg-c"})
    assert site_subtree_ids(tree, "hn-cg") == ["hn-cg"]
    assert site_subtree_ids(tree, "cg-c") == ["cg-c"]
    assert site_ancestor_ids(tree, "bd-a") == ["hn-bd", "hn", "bd-a-lab"]
    assert site_ancestor_ids(tree, "cg-c") == []


def test_every_stored_cycle_is_found_once_and_named(tree: Session) -> None:
    _set_parent(tree, "hn", "bd-a-lab")
    _set_parent(tree, "cg-c", "cg-c")

    cycles = find_site_cycles(tree)

    # hn-cg hangs off the big cycle without being on it.
    assert cycles == [["bd-a", "hn-bd", "hn", "bd-a-lab"], ["cg-c"]]
    assert describe_site_cycle(cycles[0]) == "bd-a → hn-bd → hn → bd-a-lab → bd-a"
    assert describe_site_cycle(cycles[1]) == "cg-c → cg-c"


@pytest.mark.parametrize(
    ("site_id", "parent_id"), [("hn", "hn"), ("hn", "bd-a-lab"), ("hn-bd", "bd-a")]
)
def test_a_parent_at_or_below_the_site_is_refused(
    tree: Session, site_id: str, parent_id: str
) -> None:
    with pytest.raises(SiteCycleError, match="cycle"):
        check_site_parent(tree, site_id, parent_id)


def test_other_parents_are_accepted_even_beside_a_stored_cycle(tree: Session) -> None:
    check_site_parent(tree, "bd-a", "hn-cg")
    check_site_parent(tree, "bd-a", None)
    _set_parent(tree, "hn-cg", "cg-c")  # hn-cg ⇄ cg-c
    check_site_parent(tree, "bd-a", "cg-c")  # ends although cg-c's ancestors loop
    with pytest.raises(SiteCycleError):
        check_site_parent(tree, "hn-cg", "cg-c")
