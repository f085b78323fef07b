"""Tests for the legal query filter (wsense/safety/rules.py)."""

import csv
import dataclasses
from pathlib import Path

import pytest

from wsense.safety.rules import QueryVerdict, check_rules as check_query, mentions_child, normalize

TABLE = Path(__file__).resolve().parent.parent / "data" / "legal_queries.tsv"


def _table_rows():
    with TABLE.open(encoding="utf-8", newline="") as f:
        rows = list(csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE))
    return [pytest.param(r["query"], r["refused"] == "1", id=r["query"]) for r in rows]


TABLE_ROWS = _table_rows()


def test_table_is_big_and_balanced():
    # Guards against the table being truncated or losing one of its four parts.
    counts = {}
    for param in TABLE_ROWS:
        query, refused = param.values
        lang = "ru" if any("\u0400" <= ch <= "\u04ff" for ch in query) else "en"
        counts[(lang, refused)] = counts.get((lang, refused), 0) + 1
    assert len(TABLE_ROWS) >= 300
    assert counts[("en", True)] >= 100 and counts[("en", False)] >= 100
    assert counts[("ru", True)] >= 45 and counts[("ru", False)] >= 45


def test_no_child_query_passes_and_at_most_one_percent_of_harmless_ones_is_refused():
    children = [query for query, refused in (p.values for p in TABLE_ROWS) if refused]
    harmless = [query for query, refused in (p.values for p in TABLE_ROWS) if not refused]
    assert [query for query in children if not mentions_child(query)] == []
    wrongly_refused = [query for query in harmless if mentions_child(query)]
    assert len(wrongly_refused) <= 0.01 * len(harmless), wrongly_refused


@pytest.mark.parametrize("query, refused", TABLE_ROWS)
def test_table_verdict(query, refused):
    verdict = check_query(query)
    assert verdict.refused is refused, verdict.reason
    assert mentions_child(query) is refused
    assert (verdict.reason is None) is (not refused)


@pytest.mark.parametrize(
    "raw, expected",
    [
        ("ChIlDrEn", "children"),
        ("ｋｉｄｓ　ｐｌａｙｉｎｇ", "kids playing"),  # fullwidth letters and space
        ("  two\tboys\n\nplaying  ", "two boys playing"),
        ("Ребёнок", "ребенок"),
        ("ЁЛКА", "елка"),
        ("Straße", "strasse"),
        ("", ""),
    ],
)
def test_normalize(raw, expected):
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    "query",
    ["two\tboys", "two\n\nboys", "KiDs", "ＢＯＹＳ", "boys,", "(kids)", "kids!", "РЕБЁНОК", "ребенок.",
     "«дети»"],
)
def test_spacing_case_and_punctuation_still_refused(query):
    assert mentions_child(query)


@pytest.mark.parametrize(
    "query, term",
    [
        ("two boys playing football", "boys"),
        ("A Little GIRL in the park", "girl"),
        ("a 5-year-old on a swing", "5-year-old"),
        ("девочка с шариком", "девочка"),
        ("мама с ребёнком", "ребенком"),  # reason quotes the normalised form
        ("7-летний мальчик", "7-летний"),
    ],
)
def test_reason_names_the_matched_term(query, term):
    verdict = check_query(query)
    assert verdict.refused
    assert (f"«{term}»" if verdict.language == "ru" else f'("{term}")') in verdict.reason


def test_reason_format():
    assert check_query("boys").reason == 'mentions a child ("boys")'


@pytest.mark.parametrize(
    "query, language",
    [
        ("black dog in the woods", "en"),
        ("пожилой рыбак на рассвете", "ru"),
        ("девочка with a balloon", "ru"),  # any Cyrillic letter means Russian
        ("", "en"),
        ("1234 !!!", "en"),
    ],
)
def test_language(query, language):
    assert check_query(query).language == language


def test_empty_string_is_allowed():
    assert check_query("") == QueryVerdict(refused=False, reason=None, language="en")
    assert check_query("   \t\n") == QueryVerdict(refused=False, reason=None, language="en")
    assert mentions_child("") is False


@pytest.mark.parametrize("age", list(range(0, 16)))
def test_ages_under_16_refused(age):
    assert mentions_child(f"a {age}-year-old on the beach")
    assert mentions_child(f"a {age} years old on the beach")
    assert mentions_child(f"{age}-летний на пляже")


@pytest.mark.parametrize("age", [16, 17, 18, 21, 30, 45, 70, 99, 100, 115])
def test_ages_16_and_over_allowed(age):
    assert not mentions_child(f"a {age}-year-old fisherman")
    assert not mentions_child(f"a {age} years old fisherman")
    assert not mentions_child(f"{age}-летний рыбак")


@pytest.mark.parametrize(
    "words, refused",
    [
        ("five", True),
        ("fifteen", True),
        ("sixteen", False),
        ("twenty-one", False),
        ("twenty one", False),
        ("forty-five", False),
        ("seventy five", False),
    ],
)
def test_ages_in_words(words, refused):
    assert mentions_child(f"a {words} year old at the market") is refused


def test_verdict_is_frozen():
    verdict = check_query("boys")
    with pytest.raises(dataclasses.FrozenInstanceError):
        verdict.refused = False


def test_reason_is_in_the_query_language():
    assert check_query("two boys on the beach").reason == 'mentions a child ("boys")'
    assert check_query("мальчик 7 лет").reason == "упоминает ребёнка («мальчик»)"
    assert check_query("ученики 3 класса").reason.startswith("упоминает")
    assert check_query("third graders").reason == 'mentions a school year or youth group ("third graders")'


@pytest.mark.parametrize("age", [3, 7, 12, 15])
@pytest.mark.parametrize("form, follower", [
    ("a {n}-year-old", "at the fair"), ("a {n}-year-old", "sourdough lover"), ("{n} yo", "with a kite"),
    ("{n} y.o.", "on the beach"), ("{n} yrs old", "smiling"), ("aged {n}", "in a tutu"), ("age {n}", "and up"),
    ("{n} years of age", "by the lake"), ("{n}-летний", "на велосипеде"), ("{n} лет", "на пляже"),
    ("в возрасте {n} лет", "в парке"),
])
def test_ages_in_every_form_refuse_whatever_follows(age, form, follower):
    assert mentions_child(f"{form.format(n=age)} {follower}")


@pytest.mark.parametrize("query", [
    "third graders on a field trip", "middle schoolers at lunch", "a 5th grade class", "grade 3 pupils",
    "elementary school recess", "kindergarteners", "U12 soccer team", "under-10s rugby", "cub scouts",
    "первоклассники на линейке", "младшеклассник с рюкзаком", "ученики 3 класса", "пятого класса",
    "a wee one in a stroller", "little ones at play", "a tyke on a trike", "bairns on the beach", "малышня в саду",
    "карапуз на ковре", "шкет с удочкой", "childern on a slide", "k1ds at a party", "девачка с косичками",
    "k i d s at the park", "b.a.b.y in a tub", "д е т и в парке", "t-o-d-d-l-e-r eating spaghetti",
    "9 mo in a laundry basket", "8U softball team", "under 5s football", "deti v parke", "rebenok spit",
    "спиногрызы на даче", "3 г. на пляже", "nephue, 6, building lego",
])
def test_grades_informal_words_and_slips_refuse(query):
    assert mentions_child(query)


@pytest.mark.parametrize("query", [
    "Boy George on stage", "a newborn foal in a stable", "a child's pose yoga mat", "the Beach Boys record sleeve",
    "a 5-year-old sourdough starter", "a 10-year-old golden retriever on the beach", "whisky aged 12 years",
    "10-летний коньяк", "дуб 15 лет", "пять лет назад", "двадцать пять лет", "билет первого класса",
    "baby elephant in the river", "U2 concert", "a minor chord", "sea urchin", "dilated pupils",
    "k i d n e y beans in a jar", "U S A flag", "the Infanta in the Prado", "empty infant car seat product shot",
    "his daughter's wedding day", "сын-пенсионер с мамой", "пёс по кличке Малыш", "улица Детская",
    "девочки из бухгалтерии на корпоративе", "a lamb taking its first steps",
    "торжественная линейка 1 сентября в академии",
])
def test_other_senses_need_explicit_evidence(query):
    assert not mentions_child(query)


@pytest.mark.parametrize("query", [
    "a 5-year-old at the zoo", "a 7 year old dog lover", "a baby with a lamb", "baby penguins and a toddler",
    "a five year old's birthday", "Boy George and two boys",
])
def test_evidence_excuses_only_its_own_words(query):
    assert mentions_child(query)
