"""Properties of version parsing, ordering and the policy, checked on generated versions."""

from __future__ import annotations

from hypothesis import assume, given, settings
from hypothesis import strategies as st

from version_policy import (
    UpgradeRequest,
    Version,
    VersionError,
    compare,
    decide,
    load_policy,
    parse_version,
)

POLICY = load_policy()

# Small number ranges so that generated pairs often share levels, lines and tags.
numbers = st.integers(min_value=0, max_value=12)
lines = st.sampled_from(["C", "E"])
tags = st.tuples(st.sampled_from(["", "_", "-"]), st.sampled_from(["M", "m", "P", "HF"]),
                 st.integers(min_value=0, max_value=12))


@st.composite
def version_texts(draw: st.DrawFn) -> str:
    count = draw(st.integers(min_value=1, max_value=4))
    levels = [str(draw(numbers)) for _ in range(count)]
    if count >= 3 and draw(st.booleans()):
        levels[2] = draw(lines)
    text = draw(st.sampled_from(["", "V", "v"])) + ".".join(levels)
    if draw(st.booleans()):
        separator, letters, number = draw(tags)
        if levels[-1].isalpha() and not separator:
            separator = "_"  # a line letter needs a separator before its tag
        text += f"{separator}{letters}{number}"
    return text


versions = version_texts().map(parse_version)
# Characters a version is made of, plus some that must never be accepted.
version_alphabet = st.sampled_from(list("0123456789.VvCEMmP_-+ ;$\n\t\u0663\uff17"))


@given(st.text())
def test_parsing_arbitrary_text_raises_only_version_error(text):
    try:
        version = parse_version(text)
    except VersionError as error:
        assert "expected a version like" in str(error)
    else:
        assert isinstance(version, Version)


@given(st.text(alphabet=version_alphabet, max_size=30))
def test_parsing_version_like_text_raises_only_version_error(text):
    try:
        version = parse_version(text)
    except VersionError as error:
        assert len(str(error)) < 400
    else:
        assert version.canonical.isascii()
        assert parse_version(version.canonical) == version


@given(version_texts())
def test_canonical_and_text_round_trip(text):
    version = parse_version(text)
    assert parse_version(version.canonical) == version
    assert parse_version(version.canonical).canonical == version.canonical
    assert parse_version(str(version)) == version
    assert hash(parse_version(version.canonical)) == hash(version)


def _sign(x: object, y: object) -> int:
    return (x > y) - (x < y)  # type: ignore[operator]


@given(versions, versions)
def test_compare_is_antisymmetric_and_agrees_with_sort_key(a, b):
    forward, backward = compare(a, b), compare(b, a)
    if forward.order is None:
        assert backward.order is None
    else:
        assert backward.order == -forward.order
        assert _sign(a.sort_key(), b.sort_key()) == forward.order
    assert (forward.order == 0) is (a == b)
    assert (a.sort_key() == b.sort_key()) is (a == b)
    assert forward.reason


@given(versions, versions, versions)
@settings(max_examples=300)
def test_compare_is_transitive_where_it_orders(a, b, c):
    ab, bc = compare(a, b).order, compare(b, c).order
    assume(ab is not None and bc is not None and ab == bc and ab != 0)
    assert compare(a, c).order == ab


@given(st.lists(versions, min_size=1, max_size=8))
def test_sort_key_is_a_total_order(items):
    ordered = sorted(items, key=lambda v: v.sort_key())
    for earlier, later in zip(ordered, ordered[1:]):
        assert earlier.sort_key() <= later.sort_key()
        assert compare(earlier, later).order in (-1, 0, None)


def _with_tag(version: Version, tag: tuple[str, str, int] | None) -> Version:
    if tag is None:
        return parse_version(version.base)
    _, letters, number = tag
    return parse_version(f"{version.base}_{letters}{number}")


@given(versions, versions, st.none() | tags, st.none() | tags)
@settings(max_examples=300)
def test_a_refused_pair_stays_refused_whatever_build_tags_are_added(a, b, tag_a, tag_b):
    assume(a.levels != b.levels)  # on one base the tags alone decide which is newer
    before = decide(UpgradeRequest("TongWeb", "TongWeb", a, b), POLICY)
    after = decide(UpgradeRequest("TongWeb", "TongWeb", _with_tag(a, tag_a),
                                  _with_tag(b, tag_b)), POLICY)
    assert after.allowed is before.allowed
    assert [r.rule for r in after.refusals()] == [r.rule for r in before.refusals()]


@given(versions, versions, st.none() | tags, st.none() | tags)
def test_level_and_line_rules_ignore_build_tags(a, b, tag_a, tag_b):
    def statuses(x: Version, y: Version) -> dict[str, str]:
        decision = decide(UpgradeRequest("TongWeb", "TongWeb", x, y), POLICY)
        return {r.rule: r.status for r in decision.results
                if r.rule in ("same_line", "free_levels")}

    assert statuses(a, b) == statuses(_with_tag(a, tag_a), _with_tag(b, tag_b))

