"""A cluster worker slot's restart counts, carried over its processes' restarts."""

from __future__ import annotations

import copy
from typing import Any

from megatrio.cli._carry import CarriedRestarts


def tree(http: int, consumer: int) -> dict[str, Any]:
    jobs = {"name": "jobs", "children": [{"name": "email", "restarts": consumer}]}
    return {
        "name": "basic",
        "children": [
            {"name": "http", "restarts": http},
            {"name": "jobs", "restarts": 0, "supervisor": jobs},
        ],
    }


def restarts(t: dict[str, Any]) -> tuple[int, int]:
    http, jobs = t["children"]
    return http["restarts"], jobs["supervisor"]["children"][0]["restarts"]


def test_a_replacement_process_shows_what_the_slot_counted_before() -> None:
    carried = CarriedRestarts()
    first = tree(http=2, consumer=1)
    assert carried.apply(first) is first  # nothing carried yet: shown as it is
    carried.retire(first)
    second = tree(http=0, consumer=3)
    before = copy.deepcopy(second)
    assert restarts(carried.apply(second)) == (2, 4)
    assert second == before  # the worker's own report is not changed
    carried.retire(tree(http=1, consumer=0))
    carried.retire(None)  # a process that never reported a tree carries nothing
    assert restarts(carried.apply(tree(http=0, consumer=0))) == (3, 1)


def test_malformed_trees_carry_nothing_and_do_not_fail() -> None:
    carried = CarriedRestarts()
    carried.retire({"name": "x", "children": ["junk", {"name": "http", "restarts": "2"}]})
    odd = {"name": "x", "children": ["junk", {"name": "http", "restarts": 1}]}
    assert carried.apply(odd) is odd
