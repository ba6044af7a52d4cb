"""Instance selection: the rules every command uses to turn words into one instance."""

from __future__ import annotations

import pytest

from soong_core.errors import EXIT_RUNTIME, EXIT_USAGE, SoongError, UsageError
from soong_core.models import Instance, InstanceState
from soong_core.select import MAX_LISTED, select_instance, short_ids

ACTIVE, BOOTING, TERMINATED = InstanceState.ACTIVE, InstanceState.BOOTING, InstanceState.TERMINATED


def inst(instance_id: str, name: str | None = None,
         state: InstanceState = ACTIVE) -> Instance:
    return Instance(instance_id, state, name=name)


FLEET = [
    inst("0920582c7ff041399e34823a0e15549b", "train"),
    inst("0920ffff00000000000000000000aaaa", "serve", BOOTING),
    inst("77aa0000000000000000000000000000", "0920"),  # a name that looks like a prefix
    inst("5a5a0000000000000000000000000000", "twin", TERMINATED),
    inst("6b6b0000000000000000000000000000", "twin"),
]


@pytest.mark.parametrize("ref, expected", [
    ("0920582c7ff041399e34823a0e15549b", "0920582c7ff041399e34823a0e15549b"),  # full id
    ("0920582", "0920582c7ff041399e34823a0e15549b"),  # unique prefix
    ("serve", "0920ffff00000000000000000000aaaa"),  # name
    ("0920", "77aa0000000000000000000000000000"),  # an exact name beats an id prefix
    ("  train ", "0920582c7ff041399e34823a0e15549b"),  # pasted with spaces
    ("5a5a", "5a5a0000000000000000000000000000"),  # ended instances are candidates too
])
def test_a_reference_selects_by_id_then_name_then_prefix(ref: str, expected: str) -> None:
    assert select_instance(FLEET, ref).id == expected


def test_an_ambiguous_prefix_lists_exactly_the_matching_candidates() -> None:
    fleet = [i for i in FLEET if i.name != "0920"]
    with pytest.raises(SoongError) as err:
        select_instance(fleet, "092")
    assert err.value.exit_code == EXIT_RUNTIME
    assert err.value.message == (
        "'092' matches 2 instances: 0920582c7ff041399e34823a0e15549b (train, active), "
        "0920ffff00000000000000000000aaaa (serve, booting)")
    assert "\n" not in err.value.message


def test_a_name_shared_by_two_instances_is_ambiguous() -> None:
    with pytest.raises(SoongError, match=r"^2 instances are named 'twin': 5a5a.*\(twin, "
                       r"terminated\), 6b6b.*\(twin, active\)$") as err:
        select_instance(FLEET, "twin")
    assert err.value.hints == ("give the id instead",)


def test_an_unknown_reference_lists_every_candidate() -> None:
    with pytest.raises(SoongError) as err:
        select_instance(FLEET[:2], "nope")
    assert err.value.message == (
        "no instance matches 'nope'; candidates: 0920582c7ff041399e34823a0e15549b (train, "
        "active), 0920ffff00000000000000000000aaaa (serve, booting)")
    assert err.value.hints == ("run `soong status` to list instances",)


def test_an_unknown_reference_among_no_instances_says_how_to_start_one() -> None:
    with pytest.raises(SoongError, match="there are no instances") as err:
        select_instance([], "abc")
    assert "soong start" in err.value.hints[0]


def test_long_candidate_lists_are_cut_with_a_count() -> None:
    fleet = [inst(f"id-{n:03d}") for n in range(MAX_LISTED + 5)]
    with pytest.raises(SoongError) as err:
        select_instance(fleet, "id-")
    assert err.value.message.endswith("id-009 (no name, active) and 5 more")
    assert "id-010" not in err.value.message


@pytest.mark.parametrize("ref", ["", "   "])
def test_an_empty_reference_is_a_usage_error(ref: str) -> None:
    with pytest.raises(UsageError) as err:
        select_instance(FLEET, ref)
    assert err.value.exit_code == EXIT_USAGE


def test_no_reference_means_the_single_running_instance() -> None:
    fleet = [inst("a1", "one"), inst("b2", "gone", TERMINATED),
             inst("c3", "going", InstanceState.TERMINATING)]
    assert select_instance(fleet, None).id == "a1"
    unhealthy = [inst("u1", state=InstanceState.UNHEALTHY), inst("t1", state=TERMINATED)]
    assert select_instance(unhealthy, None).id == "u1"  # still billing: it counts


def test_no_reference_with_none_running_or_several_running_fails() -> None:
    with pytest.raises(SoongError, match="^no running instance$") as err:
        select_instance([inst("b2", state=TERMINATED)], None)
    assert "soong start" in err.value.hints[0]
    with pytest.raises(SoongError) as err:
        select_instance(FLEET, None)
    assert err.value.message.startswith("4 instances are running, say which: ")
    assert "(train, active)" in err.value.message and "(serve, booting)" in err.value.message
    assert "twin, terminated" not in err.value.message


def test_short_ids_are_unique_prefixes_that_select_back() -> None:
    ids = [i.id for i in FLEET]
    shorts = short_ids(ids)
    assert shorts["0920582c7ff041399e34823a0e15549b"] == "0920582c"
    assert shorts["77aa0000000000000000000000000000"] == "77aa0000"
    assert short_ids(["abcdefgh1", "abcdefgh2", "x"]) == {
        "abcdefgh1": "abcdefgh1", "abcdefgh2": "abcdefgh2", "x": "x"}
    assert short_ids(["fake-0001"]) == {"fake-0001": "fake-0001"}  # cutting 1 char helps no one
    assert short_ids(["abcdefghijkl"]) == {"abcdefghijkl": "abcdefgh"}
    fleet = [i for i in FLEET if i.name != "0920"]
    for instance in fleet:
        assert select_instance(fleet, short_ids([i.id for i in fleet])[instance.id]) == instance


@pytest.mark.parametrize("ref, expected", [
    ("0920582C", "0920582c7ff041399e34823a0e15549b"),  # a prefix, in another case
    ("0920582C7FF041399E34823A0E15549B", "0920582c7ff041399e34823a0e15549b"),  # the full id
    ("6B6B", "6b6b0000000000000000000000000000"),
])
def test_ids_match_in_any_case(ref: str, expected: str) -> None:
    assert select_instance(FLEET, ref).id == expected


def test_names_match_only_in_their_own_case() -> None:
    with pytest.raises(SoongError, match="no instance matches 'Train'"):
        select_instance(FLEET, "Train")
    fleet = [inst("aaaa0000", "Exp"), inst("bbbb0000", "exp")]
    assert select_instance(fleet, "exp").id == "bbbb0000"
    assert select_instance(fleet, "Exp").id == "aaaa0000"


def test_an_exact_match_still_wins_over_a_prefix_in_another_case() -> None:
    # "ABCD" is one instance's whole id and, folded, a prefix of the other's
    fleet = [inst("abcd1234"), inst("ABCD")]
    assert select_instance(fleet, "ABCD").id == "ABCD"
    # ids that differ only in case: a folded prefix matches both, so it is ambiguous
    with pytest.raises(SoongError, match="'abc' matches 2 instances"):
        select_instance([inst("abcX"), inst("ABCy")], "abc")
    # an exact name beats an id prefix whatever its case
    named = [inst("beef0000"), inst("1234", "BEEF")]
    assert select_instance(named, "BEEF").id == "1234"


def test_ended_instances_are_candidates_only_when_nothing_listed_matches() -> None:
    asked: list[int] = []
    gone = [inst("5a5a9999", "old", TERMINATED), inst("0920582c0000", "older", TERMINATED)]

    def ended() -> list[Instance]:
        asked.append(1)
        return gone

    assert select_instance(FLEET, "5A5A99", ended=ended).id == "5a5a9999"
    assert select_instance(FLEET, "old", ended=ended).id == "5a5a9999"
    assert len(asked) == 2
    # a listed match is never made ambiguous by what history remembers, nor looked up
    assert select_instance(FLEET, "0920582", ended=ended).id == FLEET[0].id
    assert len(asked) == 2
    with pytest.raises(SoongError, match="no instance matches 'nope'; candidates: 0920"):
        select_instance(FLEET, "nope", ended=ended)
