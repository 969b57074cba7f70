"""Specification of the version grammar, ordering and version ranges (version_policy)."""

from __future__ import annotations

import pytest

from version_policy import (
    Tag,
    VersionError,
    VersionPolicyError,
    compare,
    parse_range,
    parse_range_list,
    parse_version,
)

VALID_EXAMPLE = "expected a version like 7.0.4.9, V7.0.4.9, 7.0.4.9_M3 or 7.0.C.6"

# text, expected levels, expected tag, expected canonical form
VALID = [
    ("7", (7, 0, 0, 0), None, "7.0.0.0"),
    ("7.0", (7, 0, 0, 0), None, "7.0.0.0"),
    ("7.0.4", (7, 0, 4, 0), None, "7.0.4.0"),
    ("7.0.4.9", (7, 0, 4, 9), None, "7.0.4.9"),
    ("V7.0.4.9", (7, 0, 4, 9), None, "7.0.4.9"),
    ("v7.0.4.9", (7, 0, 4, 9), None, "7.0.4.9"),
    ("  7.0.4.9\t\n", (7, 0, 4, 9), None, "7.0.4.9"),
    ("007.00.04.09", (7, 0, 4, 9), None, "7.0.4.9"),
    ("7.0.10", (7, 0, 10, 0), None, "7.0.10.0"),
    ("7.0.4.999999999", (7, 0, 4, 999999999), None, "7.0.4.999999999"),
    ("7.0.4.9_M3", (7, 0, 4, 9), Tag("M", 3), "7.0.4.9_M3"),
    ("7.0.4.9M1", (7, 0, 4, 9), Tag("M", 1), "7.0.4.9_M1"),
    ("7.0.4.9m1", (7, 0, 4, 9), Tag("M", 1), "7.0.4.9_M1"),
    ("7.0.4.2-P1", (7, 0, 4, 2), Tag("P", 1), "7.0.4.2_P1"),
    ("7.0.4.9_M10", (7, 0, 4, 9), Tag("M", 10), "7.0.4.9_M10"),
    ("7.0.4_M3", (7, 0, 4, 0), Tag("M", 3), "7.0.4.0_M3"),
    ("7.0.4.9_HF02", (7, 0, 4, 9), Tag("HF", 2), "7.0.4.9_HF2"),
    ("7.0.C.6", (7, 0, "C", 6), None, "7.0.C.6"),
    ("7.0.E.3", (7, 0, "E", 3), None, "7.0.E.3"),
    ("V7.0.C", (7, 0, "C", 0), None, "7.0.C.0"),
    ("7.0.C_M1", (7, 0, "C", 0), Tag("M", 1), "7.0.C.0_M1"),
    ("7.0.C.6-P2", (7, 0, "C", 6), Tag("P", 2), "7.0.C.6_P2"),
]


@pytest.mark.parametrize(("text", "levels", "tag", "canonical"), VALID,
                         ids=[repr(case[0]) for case in VALID])
def test_valid_versions_parse_to_levels_tag_and_canonical_form(text, levels, tag, canonical):
    version = parse_version(text)
    assert version.levels == levels
    assert version.tag == tag
    assert version.canonical == canonical
    assert str(version) == text.strip()
    assert version.line == (levels[2] if isinstance(levels[2], str) else None)


# a, b, expected order of a against b, words the reason must contain
COMPARISONS = [
    ("7.0.4", "7.0.4.0", 0, "same version"),
    ("V7.0.4.9", "7.0.4.9", 0, "same version"),
    ("7", "7.0.0.0", 0, "same version"),
    ("7.0.4.9_M1", "7.0.4.9M1", 0, "same version"),
    ("7.0.4.9-M1", "7.0.4.9_m01", 0, "same version"),
    ("7.0.10", "7.0.9", 1, "level 3: 10 vs 9"),
    ("7.0.9", "7.0.10", -1, "level 3: 9 vs 10"),
    ("7.0.4.10", "7.0.4.9", 1, "level 4"),
    ("8.0", "7.9.9.9", 1, "level 1"),
    ("7.1", "7.0.99", 1, "level 2"),
    ("7.0.4.1", "7.0.4.2", -1, "older"),
    ("7.0.4.9", "7.0.4.1", 1, "newer"),
    ("7.0.4.9", "7.0.4.9_M1", -1, "untagged build precedes"),
    ("7.0.4.9_M1", "7.0.4.9", 1, "untagged build precedes"),
    ("7.0.4.9_M2", "7.0.4.9_M10", -1, "tag M2 vs M10"),
    ("7.0.4.9_M3", "7.0.4.9_M1", 1, "tag M3 vs M1"),
    ("7.0.4.9_M1", "7.0.4.9_P1", None, "tags M1 and P1 have different letters"),
    ("7.0.4.9_P2", "7.0.4.9_M1", None, "cannot be ordered without the catalog"),
    ("7.0.4.9_P5", "7.0.5.0", -1, "level 3"),
    ("7.0.5.0_M1", "7.0.4.9_P9", 1, "level 3"),
    ("7.0.C.3", "7.0.C.6", -1, "level 4: 3 vs 6"),
    ("7.0.C.6", "7.0.C.6_M1", -1, "untagged"),
    ("7.0.4.9", "7.0.C.6", None, "different product lines (4 vs C)"),
    ("7.0.C.6", "7.0.E.3", None, "different product lines (C vs E)"),
    ("7.0.C.6", "7.1.4.1", -1, "level 2"),
    ("8.0.0", "7.0.C.9", 1, "level 1"),
]


@pytest.mark.parametrize(("a", "b", "order", "words"), COMPARISONS,
                         ids=[f"{c[0]} vs {c[1]}" for c in COMPARISONS])
def test_compare_orders_versions_and_says_why(a, b, order, words):
    va, vb = parse_version(a), parse_version(b)
    forward, backward = compare(va, vb), compare(vb, va)
    assert forward.order == order
    assert words in forward.reason
    assert backward.order == (None if order is None else -order)
    assert (va == vb) is (order == 0)
    if order == 0:
        assert hash(va) == hash(vb)


MALFORMED = [
    ("", "empty"),
    ("   ", "empty"),
    ("abc", "not a number"),
    ("V", "nothing follows the V prefix"),
    ("VV7.0", "not a number"),
    ("7.0.4.9;rm -rf /", "';'"),
    ("$(id)", "'$'"),
    ("`id`", "'`'"),
    ("7.0.4|sh", "'|'"),
    ("7.0.4\n9", "whitespace"),
    ("7.0 .4", "whitespace"),
    ("7.0.4.9.1", "5 levels"),
    ("7..4", "level 2 is empty"),
    ("7.0.4.", "level 4 is empty"),
    (".7.0", "level 1 is empty"),
    ("7.0.4+1", "'+'"),
    ("\uff17.0.4", "non-ASCII"),
    ("7.0.\u0663", "non-ASCII"),
    ("7.0.c.6", "lowercase"),
    ("7.0.CC.6", "not a number"),
    ("7.C.4.1", "only level 3 may be a product-line letter"),
    ("C.0.4.1", "only level 3 may be a product-line letter"),
    ("7.0.4.C", "only level 3 may be a product-line letter"),
    ("7.0.CM1", "separate them with _ or -"),
    ("7.0.4.9_M", "not a number"),
    ("7.0.4.9_", "not a number"),
    ("7.0.4.9__M1", "not a number"),
    ("7.0.4.1234567890", "more than 9 digits"),
    ("7.0.4.9_M1234567890", "more than 9 digits"),
    ("-7.0", "not a number"),
    ("7.0.4.9" + "0" * 60, "at most 64"),
]


@pytest.mark.parametrize(("text", "problem"), MALFORMED, ids=[repr(c[0]) for c in MALFORMED])
def test_malformed_versions_are_refused_with_what_is_wrong_and_what_is_valid(text, problem):
    with pytest.raises(VersionError) as caught:
        parse_version(text)
    message = str(caught.value)
    assert problem in message
    assert message.endswith(VALID_EXAMPLE)
    assert ascii(text[:40]) in message  # quotes the input, escaped
    assert isinstance(caught.value, ValueError)
    assert isinstance(caught.value, VersionPolicyError)


@pytest.mark.parametrize("text", ["7" * 1000, "7." * 500, "\n" * 10 + "x" * 990, "\x1b[31m" * 200],
                         ids=["digits", "dots", "newlines-then-letters", "terminal-escapes"])
def test_very_long_input_gives_a_bounded_escaped_message(text):
    with pytest.raises(VersionError) as caught:
        parse_version(text)
    message = str(caught.value)
    assert len(message) < 400
    assert "\n" not in message and "\x1b" not in message
    assert message.endswith(VALID_EXAMPLE)


@pytest.mark.parametrize("value", [None, 7, 7.0, b"7.0.4"], ids=repr)
def test_non_text_is_refused_as_a_version_error(value):
    with pytest.raises(VersionError, match="expected text"):
        parse_version(value)


def test_version_defines_no_less_than_so_callers_choose_compare_or_sort_key():
    with pytest.raises(TypeError):
        _ = parse_version("7.0.4.1") < parse_version("7.0.4.2")  # type: ignore[operator]


def test_sort_key_sorts_numerically_untagged_first_and_lines_after_numbers():
    texts = ["7.0.C.6", "7.0.10", "7.0.4.9_M10", "7.0.4.9", "7.0.9", "7.0.4.9_M2", "7.0.C.3"]
    ordered = sorted((parse_version(t) for t in texts), key=lambda v: v.sort_key())
    assert [str(v) for v in ordered] == [
        "7.0.4.9", "7.0.4.9_M2", "7.0.4.9_M10", "7.0.9", "7.0.10", "7.0.C.3", "7.0.C.6"]


# range text, version, expected containment, words the reason must contain
CONTAINMENT = [
    (">=7.0.4.1, <7.0.4.3", "7.0.4.1", True, "within"),
    (">=7.0.4.1, <7.0.4.3", "7.0.4.2_M1", True, "within"),
    (">=7.0.4.1, <7.0.4.3", "7.0.4.3", False, "not <7.0.4.3"),
    (">=7.0.4.1, <7.0.4.3", "7.0.4.0", False, "not >=7.0.4.1"),
    (" >= 7.0.4.1 ,<= 7.0.4.3 ", "7.0.4.3", True, "within"),
    (">7.0.4.1", "7.0.4.1", False, "outside"),
    ("==7.0.4", "V7.0.4.0", True, "within"),
    ("!=7.0.4.2", "7.0.4.2", False, "outside"),
    ("!=7.0.4.2", "7.0.C.2", True, "within"),
    (">=7.0.4.1, <7.0.4.3", "7.0.C.2", None, "different product lines"),
    (">=7.0.4.9_M1", "7.0.4.9_P1", None, "different letters"),
    (">=7.0.4.1, <7.0.4.3", "7.0.C.2_M1", None, "cannot tell"),
    ("<7.0.4.1, >=7.0.C.1", "7.0.C.0", False, "outside"),  # a definite no beats cannot-tell
]


@pytest.mark.parametrize(("text", "version", "result", "words"), CONTAINMENT,
                         ids=[f"{c[1]} in {c[0]}" for c in CONTAINMENT])
def test_range_containment_is_true_false_or_cannot_tell(text, version, result, words):
    containment = parse_range(text).contains(parse_version(version))
    assert containment.result is result
    assert words in containment.reason


@pytest.mark.parametrize("text", [">=7.0.4.1, <7.0.4.3", "==V7.0.C.6_M1", "!=7.0.4.2-P1",
                                  ">7, <=8.1"])
def test_range_text_round_trips(text):
    parsed = parse_range(text)
    assert parse_range(str(parsed)) == parsed


def test_range_list_joins_the_constraints_of_each_item():
    joined = parse_range_list([">=7.0.4.1", "<7.0.4.3, !=7.0.4.2"])
    assert str(joined) == ">=7.0.4.1, <7.0.4.3, !=7.0.4.2"
    assert joined.contains(parse_version("7.0.4.2")).result is False


BAD_RANGES = [
    ("", "empty"),
    ("7.0.4.1", "no operator"),
    ("=>7.0.4.1", "not OP VERSION"),
    (">=", "no version after the operator"),
    (">=7.0.4.1,", "stray comma"),
    (">=7.0.4.1 <7.0.4.3", "not OP VERSION"),
    (">=7.0.x", "lowercase"),
    (">=7.0.4.1;reboot", "';'"),
    (">=7.0.4.1, " * 200, "longer than 1024"),
]


@pytest.mark.parametrize(("text", "problem"), BAD_RANGES, ids=[repr(c[0][:20]) for c in BAD_RANGES])
def test_bad_ranges_name_the_constraint_and_the_expected_form(text, problem):
    with pytest.raises(VersionError) as caught:
        parse_range(text)
    message = str(caught.value)
    assert problem in message
    assert "expected constraints like '>=7.0.4.1, <7.0.4.3'" in message


@pytest.mark.parametrize("items", [[], "<7.0", [">=7.0", 7]], ids=["empty", "string", "number"])
def test_bad_range_lists_are_refused(items):
    with pytest.raises(VersionError):
        parse_range_list(items)
