"""Legal query rules: refuse queries and captions that mention children (under 16), in English and Russian.

The law forbids showing images or descriptions of children, so a query that asks for one is refused before any
search runs, and the same rules drop captions from training. They are regexes over normalised text (the word lists:
wsense.safety.vocabulary), cheap enough for every caption of the data set. Queries also get a learned second opinion
(wsense.safety.query_check), which catches paraphrases no list holds.

Design (operators' version: docs/legal_filter.md):
- Recall first. A child word, an age of 0-15 in any form ("7 yo", "aged 7", "N лет", "семилетний"), a school year
  ("third graders", "3 класса") or an informal word ("a wee one", "карапуз") refuses, whatever follows.
- A match is allowed only on explicit evidence of another sense, from closed lists: a known name ("Boy George"), a
  young animal or thing after "baby" or "newborn", a non-person noun heading the phrase an age describes ("a 5-year-old
  sourdough starter"), a Russian duration ("10 лет назад"). Nothing is allowed by default.
- Whole words only: "kidney", "boycott", "детектив" never match.
- The reason names the matched words, in the query's language.
"""
from __future__ import annotations

import datetime
import functools
import re
import unicodedata
from dataclasses import dataclass

from wsense.safety import vocabulary as v


@dataclass(frozen=True)
class QueryVerdict:
    refused: bool
    reason: str | None  # None when allowed; says why in the query's language when refused
    language: str  # "ru" if the query contains Cyrillic letters, else "en"


def normalize(text: str) -> str:
    """NFKC (fullwidth -> ASCII), casefold, ё -> е, collapse whitespace, strip."""
    text = unicodedata.normalize("NFKC", text).casefold().replace("ё", "е")
    # Curly apostrophes would otherwise defeat "baby's breath"; soft hyphens and zero-width characters split words.
    text = text.replace("\u2019", "'").replace("\u00ad", "").replace("\u200b", "").replace("\u200d", "")
    return " ".join(text.split())


_CHECKS = re.compile(
    rf"(?P<age>{v.EN_AGE}|{v.RU_AGE})"
    rf"|\b(?P<school>{v.EN_SCHOOL})(?!\w)|(?P<school_ru>{v.RU_SCHOOL})"
    rf"|\b(?P<child>{v.EN_CHILD}|{v.RU_CHILD})(?:'s|s'|')?(?!\w)"
)
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")
_EMPTY = re.compile(r"\b(?:" + "|".join(v.EMPTY) + ")")
_ADULT_SCHOOLING = re.compile(r"\b(?:" + "|".join(v.ADULT_SCHOOLING) + ")")
_OFFICE = re.compile(r"\b(?:корпоратив|офис|бухгалтери|отдел|тимбилдинг|coworkers|office|accounting)")
_CHILD_WORD = re.compile(rf"(?:{v.EN_CHILD}|{v.RU_CHILD})")
_SPACED = re.compile(r"(?<!\w)(?:\w[ .-]){2,}\w(?!\w)")  # letters one by one, split by spaces, dots or hyphens
# Russian written in Latin letters ("deti v parke", "rebenok"), longest letter groups first.
_TRANSLIT = [("shch", "щ"), ("sch", "щ"), ("zh", "ж"), ("kh", "х"), ("ch", "ч"), ("sh", "ш"), ("ts", "ц"),
             ("yu", "ю"), ("ya", "я"), ("yo", "е"), ("iy", "ий"), ("yj", "ый"), ("yy", "ый"), ("ja", "я"),
             ("ju", "ю"), ("a", "а"), ("b", "б"), ("v", "в"), ("g", "г"), ("d", "д"), ("e", "е"), ("z", "з"),
             ("i", "и"), ("j", "й"), ("k", "к"), ("l", "л"), ("m", "м"), ("n", "н"), ("o", "о"), ("p", "п"),
             ("r", "р"), ("s", "с"), ("t", "т"), ("u", "у"), ("f", "ф"), ("h", "х"), ("c", "к"), ("y", "ы"),
             ("w", "в"), ("x", "кс"), ("q", "к")]
_TRANSLIT_RE = re.compile("|".join(re.escape(latin) for latin, _ in _TRANSLIT))
_TRANSLIT_MAP = dict(_TRANSLIT)
_RU_CHILD_WORD = re.compile(rf"(?:{v.RU_CHILD})")
_LEET = str.maketrans({"1": "i", "0": "o", "3": "e", "4": "a", "5": "s", "7": "t", "@": "a", "$": "s"})


def _cyrillic(word: str) -> str:
    return _TRANSLIT_RE.sub(lambda m: _TRANSLIT_MAP[m.group(0)], word)


def _deletions(word: str) -> set[str]:
    return {word[:i] + word[i + 1:] for i in range(len(word))}


# Every spelling one deletion away from a key (SymSpell): a word within one slip of a key shares one with it.
_SLIPS = {variant: key for key in v.SPELLING_KEYS for variant in _deletions(key) | {key}}


def _spelling_slip(word: str) -> bool:
    """A word of six letters or more one slip (a letter missing, extra, wrong or swapped) from a child word."""
    return (len(word) >= 6 and word not in v.NOT_SLIPS
            and (word in _SLIPS or any(variant in _SLIPS for variant in _deletions(word))))


def _leet(word: str) -> str | None:
    """"k1ds" -> "kids", "kidz" -> "kids": a word with digits or symbols for letters, or a final z for s, as letters."""
    if not re.search(r"[a-zа-я]", word):
        return None
    plain = word.translate(_LEET)
    plain = plain[:-1] + "s" if plain.endswith("z") else plain
    return plain if plain != word else None


_WORD = re.compile(r"[\w'’&]+(?:-[\w']+)*")
_NAMES = re.compile(r"(?<!\w)(?:" + "|".join(re.escape(name) for name in sorted(v.NAMES, key=len, reverse=True))
                    + r")(?!\w)")
REASONS = {
    "en": {"age": "mentions a child's age", "child": "mentions a child",
           "school": "mentions a school year or youth group", "learned": "reads as a query about children"},
    "ru": {"age": "упоминает возраст ребёнка", "child": "упоминает ребёнка",
           "school": "упоминает школьный класс или детскую группу",
           "learned": "похоже на запрос о детях"},
}


def language_of(norm: str) -> str:
    return "ru" if _CYRILLIC.search(norm) else "en"


def refusal_reason(kind: str, language: str, detail: str) -> str:
    """'mentions a child ("boys")' or 'упоминает ребёнка («мальчики»)': the reason of a refusal, in the query's
    language; `detail` is the matched words, or the learned check's score."""
    quoted = f"«{detail}»" if language == "ru" else f'"{detail}"'
    return f"{REASONS[language][kind]} ({quoted})"


def _words(text: str) -> list[str]:
    return [w.group(0) for w in _WORD.finditer(text)]


def _is_thing(word: str, things, stems) -> bool:
    return bool(word) and (word in things or (bool(stems) and word.startswith(tuple(stems))))


def _heads_a_thing(after: list[str], things, stems=()) -> bool:
    """Within the next three words, before any function word, a noun of `things` (or starting with one of `stems`)
    that is not followed by a noun making a person of it: "a 10-year-old golden retriever on the beach", "an 8-year-old
    cheddar wheel", not "a 7-year-old dog lover"."""
    words = [word.strip(",.;:!?'") for word in after[:4]]
    for i, word in enumerate(words[:3]):
        if word in v.STOP:
            return False
        if _is_thing(word, things, stems):
            following = words[i + 1] if i + 1 < len(words) else ""
            if _is_thing(following, things, stems):
                continue  # "scotch whisky", "oak tree": the last noun heads the phrase
            return following not in v.PERSON_NOUNS
    return False


_ADULT_AGE_BEFORE = re.compile(r"(?<!\d)(?:1[89]|[2-9]\d)[ -]?(?:years?|yrs?)[ -]?old$")  # "my 30 year old son"
_ADULT_AGE_AFTER = re.compile(r"(?:1[89]|[2-9]\d)[ -]?(?:лет|года?|years?\b)"  # "сын 40 лет", "дочь за 40"
                              r"|за (?:[2-9]\d|тридцать|сорок|пятьдесят|шестьдесят)")


def _is_child_thing(term: str, match: re.Match, following: str) -> bool:
    """A place or thing made for children (or a possessive: "children's shoes"), not a child."""
    if match.lastgroup == "school":  # a school place, not its pupils: "an empty elementary classroom"
        return re.search(r"(?:ers?|pupils?|students?|kids|children|scouts?|players?|teams?|guides?|troops?)$",
                         term) is None
    return (term in v.CHILD_THINGS or term.startswith(v.CHILD_THING_STEMS) or match.group(0).endswith(("'s", "s'"))
            or re.sub(r"[ -]", " ", term) in v.CHILD_THINGS or following in v.CHILD_PRODUCTS)


def _names_an_adult(term: str, before: list[str], after: list[str]) -> bool:
    """A family word right after an adult age, right before one, or before a wedding: "my 30 year old son", "сын 40
    лет", "мать и дочь за 40", "his daughter's wedding"."""
    if not (term in v.FAMILY or term.startswith(v.FAMILY_STEMS)):
        return False
    return (_ADULT_AGE_BEFORE.search(" ".join(before[-4:])) is not None
            or _ADULT_AGE_AFTER.match(" ".join(after[:2])) is not None
            or bool({"wedding", "bride", "groom"} & set(after[:3]))
            or any(w.startswith(("свадьб", "невест", "жених")) for w in after[:3]))


def _other_sense(match: re.Match, norm: str, names: list[tuple[int, int]]) -> bool:
    """True where explicit evidence around a match shows that it does not name a child (closed lists only)."""
    if any(start <= match.start() and match.end() <= end for start, end in names):
        return True
    kind = match.lastgroup
    term = match.group(kind).strip("'")
    before, after = _words(norm[:match.start()]), _words(norm[match.end():])
    previous, following = (before[-1] if before else ""), (after[0] if after else "")
    if previous in ("without", "no", "nor", "без"):
        return True  # "a playground without children", "без детей"
    if previous in v.NAME_BEFORE or previous in v.ADULT_MARKERS:
        return True  # "улица Детская", "пёс по кличке Малыш"; "former child actor", "бывшие ученики"
    if following.startswith(("студент", "пенсионер", "курсант")):
        return True  # "внучка-студентка", "сын-пенсионер"
    if ("first steps" in term or term.startswith("первы")) and any(
            w in v.YOUNG_ANIMALS or w.startswith(v.RU_YOUNG_ANIMALS) for w in before + after):
        return True  # "a lamb taking its first steps", "котёнок, первые шаги"
    if term.startswith(("девоч", "девчон", "мальчик", "girls", "boys")) and _OFFICE.search(norm):
        return True  # "девочки из бухгалтерии на корпоративе": colleagues
    if (match.lastgroup == "school" or "сентябр" in term) and _ADULT_SCHOOLING.search(norm):
        return True  # "1 сентября в академии", "kindergarten teacher training for adults"
    if _is_child_thing(term, match, following) and (_EMPTY.search(norm) or previous in v.ANIMAL_OWNERS):
        return True  # "детская площадка зимой без людей", "an empty stroller", "puppy kindergarten"
    if _names_an_adult(term, before, after):
        return True  # "adult children", "взрослая дочь", "my 30 year old son", "сын 40 лет"
    if kind == "age":
        year = re.search(r"(?:19|20)\d\d", term)
        if year:  # a birth year: a child if born less than 16 years ago; a class graduating at 18 in 3 years or later
            this_year = datetime.date.today().year
            if term.startswith("class of"):
                return int(year.group(0)) < this_year + 3
            return int(year.group(0)) <= this_year - 16
        if _CYRILLIC.search(term):
            if previous in v.RU_TENS or previous in v.RU_DURATION_BEFORE or following in v.RU_DURATION_AFTER:
                return True
            # "10-летний коньяк", "дуб 15 лет": a thing right after the age, or right before a "N лет".
            things = v.RU_AGED_THINGS + v.RU_YOUNG_ANIMALS
            return _heads_a_thing(after[:1], (), things) or previous.startswith(things)
        if re.search(r"old|y\.?/?o|yrs?|age|months?|weeks?|days?", term) is None:
            return False  # "5th birthday" has no other sense
        # "a 12 year old scotch" (attributive: the noun after), "whisky aged 12 years", "a tree 10 years old" (the
        # noun before); "5 years old building a sandcastle" describes no noun after it.
        attributive = term.endswith("old") and re.search(r"years|yrs|aged", term) is None
        return ((attributive and _heads_a_thing(after, v.AGED_THINGS))
                or (not term.endswith("-old") and previous.strip(",") in v.AGED_THINGS))
    if kind == "school_ru":
        return previous in v.RU_FIRST_CLASS or any(w in v.RU_FIRST_CLASS for w in after[:1])
    if term in ("baby", "babies", "newborn", "newborns", "juvenile", "juveniles"):
        things = v.YOUNG_ANIMALS + (v.BABY_THINGS if term.startswith("bab") else ())
        named = [word in things or word.rstrip("s'") in things for word in after[:2]]
        # "baby elephant", "baby african elephant"; not "baby with a lamb".
        return bool(named) and (named[0] or (len(named) > 1 and named[1] and following not in v.STOP
                                             and following not in ("boy", "girl", "brother", "sister")))
    if term in ("tot", "tots"):
        return following == "of"  # "a tot of rum"
    if term in ("kiddie", "kiddy"):
        return following in ("pool", "pools")
    if term.startswith("коляск"):
        return any(word.startswith(("инвалидн", "мотоцикл", "кукольн")) for word in before[-2:] + after[:2])
    if term in ("nanny", "nannies"):
        return following in ("goat", "goats", "cam", "cams", "state")
    if term in ("kid", "kids"):
        return (following in ("goat", "goats", "leather", "glove", "gloves", "skin")
                or previous in ("goat's", "goat", "goats", "goats'", "nanny")
                or (previous in ("her", "its", "their") and re.search(r"\b(?:nanny|mother|mama) goats?\b", norm)
                    is not None))
    if term == "child":
        return previous in ("julia", "lee", "lydia", "francis", "mr", "mrs", "ms", "dr")
    if term == "son":
        return following in ("cubano", "jarocho", "doong") or " ".join(after[:2]) in ("et lumière", "et lumiere")
    if term == "childhood":
        return following in ("home", "homes", "house", "houses", "friend", "friends", "sweetheart", "sweethearts",
                             "hometown", "town", "street", "neighborhood", "neighbourhood", "village")
    if term in ("minor", "minors"):
        return following in v.MINOR_THINGS
    if term in ("youth", "youths"):
        return following in ("hostel", "hostels")
    if term in ("teens",):
        return previous in ("late", "her", "his") and following not in ("girl", "boy")  # "in her late teens"
    if term in ("pupil", "pupils"):
        return bool({"eye", "eyes", "dilated", "iris", "constricted", "contracted"} & set(before[-3:] + after[:3]))
    if term == "scouts":
        return previous in ("talent", "model", "modeling", "modelling", "location", "baseball", "football", "soccer",
                            "nfl", "nba", "sports", "army", "military", "cavalry")
    if term in ("stroller", "strollers", "pram", "prams"):
        return previous in ("evening", "morning", "leisurely", "sunday")
    if term.startswith("крох"):
        return following.startswith(("хлеб", "печень", "сыр", "пирог", "торт", "мрамор", "стекл"))
    if term in ("lassie", "lassies"):
        return following in ("dog", "collie", "film", "movie", "show", "the")
    if term == "детства":
        return previous in ("дом", "дома", "доме", "друзья", "друзей", "друг", "друга", "подруга", "подруги",
                            "город", "улица", "улицы")
    if term.startswith("детск"):
        return following.startswith(v.RU_CHILD_PROFESSIONS)
    if term.startswith("новорожденн"):
        return _heads_a_thing(after[:2], (), v.RU_YOUNG_ANIMALS)
    if term.startswith("юн"):
        return following.startswith(("девушк", "дам", "леди", "особ", "студент"))
    return False


@functools.lru_cache(maxsize=4096)
def _judged(norm: str) -> tuple[tuple[tuple[int, int], ...], tuple[tuple[re.Match, bool], ...]]:
    """The known names' spans in normalised text, and each rule match with whether explicit evidence excuses it:
    computed once per text for both the rules' verdict and what the learned check reads."""
    names = [(m.start(), m.end()) for m in _NAMES.finditer(norm)]
    return tuple(names), tuple((m, _other_sense(m, norm, names)) for m in _CHECKS.finditer(norm))


def excused_text(text: str) -> str:
    """The normalised text without the words the rules excused on explicit evidence ("Boy George on stage" -> "on
    stage", "baby penguins huddled" -> "penguins huddled"): what the learned check reads, so that evidence of
    another sense counts for both."""
    norm = normalize(text)
    names, matches = _judged(norm)
    spans = list(names) + [(m.start(), m.end()) for m, excused in matches if excused]
    for start, end in sorted(spans, reverse=True):
        norm = norm[:start] + " " + norm[end:]
    return " ".join(norm.split())


def rule_matches(text: str) -> list[tuple[str, str]]:
    """(kind, matched words) for each rule that refuses `text`, in order: kind is age, child or school."""
    norm = normalize(text)
    names, judged_matches = _judged(norm)
    matches = [m for m, _ in judged_matches]
    found = [(m.lastgroup.removesuffix("_ru"), m.group(m.lastgroup)) for m, excused in judged_matches if not excused]
    if not found:  # misspelt or disguised: "childern", "k1ds", "девачка"; words the rules judged are left alone
        for spaced in _SPACED.finditer(norm):  # "k i d s", "b.a.b.y", "д е т и в парке" (a one-letter word beside)
            joined = re.sub(r"[ .-]", "", spaced.group(0))
            if any(_CHILD_WORD.fullmatch(run) or _spelling_slip(run) for run in (joined, joined[:-1], joined[1:])):
                found.append(("child", spaced.group(0)))
        judged = list(names) + [(m.start(), m.end()) for m in matches]
        for word_match in re.finditer(r"[\w@$]+", norm):
            if any(start <= word_match.start() < end for start, end in judged):
                continue
            word = word_match.group(0)
            if re.fullmatch(r"[a-z]{3,}", word) and _RU_CHILD_WORD.fullmatch(_cyrillic(word)):
                found.append(("child", word))  # "deti", "rebenok", "malysh"
                continue
            plain = _leet(word)
            if (plain and _CHILD_WORD.fullmatch(plain)) or _spelling_slip(word):
                found.append(("child", word))
    return found


def check_rules(text: str) -> QueryVerdict:
    """The rules' verdict on a text: refused when any rule matches, with the first match as the reason."""
    language = language_of(normalize(text))
    matches = rule_matches(text)
    if matches:
        kind, words = matches[0]
        return QueryVerdict(True, refusal_reason(kind, language, words), language)
    return QueryVerdict(False, None, language)


def mentions_child(text: str) -> bool:
    """The rules alone: what drops captions from training and descriptions from a catalog."""
    return bool(rule_matches(text))
