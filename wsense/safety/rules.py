"""Legal query filter: refuse queries and captions that mention children (under 16).

The law forbids showing images or descriptions of children, so a query that asks
for one is refused before any search runs, and the same check is used to drop
captions from the index. The check is a handful of module-level compiled regexes
over normalised text; it runs on ~50k captions, so it must stay cheap.

Design choices (operators' version: docs/legal_filter.md):
- Whole words only, with their inflections: "kidney", "skid", "boycott", "sonar",
  "детектив" and "детали" must not match. Compounds that name adults are left alone
  because a word boundary is required: "girlfriend", "boyfriend", "cowboy",
  "showgirl", "мальчишник" (bachelor party).
- We prefer refusing to missing: "boyhood", "minor", "son", "kid" are refused even
  where an adult or animal may be meant, except where the words around them give
  another sense (_other_sense): a goat's kid and kid leather, "baby" for young
  animals and things ("baby spinach", "baby grand piano"), Child as a surname
  ("Julia Child"), French and Spanish "son" ("son et lumière", "son cubano"),
  "childhood" / "детство" as a time of life ("childhood home", "дом детства"), and
  an age that describes an animal or a thing ("a 12 year old scotch",
  "10-летний коньяк"). tests/data/legal_queries.tsv holds these traps on both sides.
- Ages: an explicit age of 0-15 is refused ("5-year-old", "5-летний", "5 лет");
  16 and over is allowed. Russian "N лет/год/года" is taken as an age even though
  it can mean a duration ("10 лет назад" is exempt, "на 5 лет" is not).
- Out of scope: Cyrillic/Latin homoglyph mixing ("bоy" with a Cyrillic "о"),
  spelling mistakes, deliberately split words ("k i d s"), and languages other
  than English and Russian.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass


@dataclass(frozen=True)
class QueryVerdict:
    refused: bool
    reason: str | None  # None when allowed; names the matched term when refused
    language: str  # "ru" if the query contains Cyrillic letters, else "en"


def normalize(text: str) -> str:
    """NFKC (fullwidth -> ASCII), casefold, ё -> е, collapse whitespace, strip."""
    text = unicodedata.normalize("NFKC", text).casefold().replace("ё", "е")
    # Curly apostrophes would otherwise defeat "baby's breath".
    text = text.replace("\u2019", "'")
    return " ".join(text.split())


def _words(*alternatives: str) -> str:
    return "|".join(alternatives)


# --- English -------------------------------------------------------------------

# Things called "baby" that are not a child: colours, vegetables, objects,
# events and young animals. Kept short on purpose; anything else with "baby" refuses.
_BABY_EXCEPTIONS = _words(
    r"blue", r"pink", r"carrots?", r"spinach", r"corn", r"potato(?:es)?",
    r"tomato(?:es)?", r"bok choy", r"back ribs?", r"grand(?: piano)?", r"shower",
    r"boomers?", r"bump", r"pool",
    r"animals?", r"birds?", r"elephants?", r"goats?", r"deer", r"ducks?",
    r"ducklings?", r"seals?", r"turtles?", r"owls?", r"fox(?:es)?", r"bears?",
    r"lions?", r"horses?", r"cows?", r"sheep", r"lambs?", r"monkeys?",
    r"penguins?", r"giraffes?", r"zebras?", r"rhinos?", r"dolphins?", r"whales?",
    r"hedgehogs?", r"pandas?", r"kangaroos?", r"otters?", r"calf", r"calves", r"rabbits?", r"bunn(?:y|ies)",
    r"hippos?", r"koalas?", r"sloths?", r"tigers?", r"gorillas?", r"chimps?", r"orangutans?", r"camels?",
    r"llamas?", r"alpacas?", r"pigs?", r"piglets?", r"squirrels?", r"raccoons?", r"chicks?", r"chickens?",
    r"puppies", r"puppy", r"kittens?", r"foals?", r"ponies", r"pony",
)
# "minor" as an adjective for things, not people.
_MINOR_EXCEPTIONS = _words(
    r"league(?:rs?)?", r"key", r"chord", r"scale", r"details?", r"injur(?:y|ies)",
    r"repairs?", r"damage", r"roads?", r"planets?",
)

_EN_CHILD = _words(
    # "childhood" refuses: a query about childhood asks for pictures of children.
    r"(?:grand|step|god|school)?child(?:ren|s|hood)?",
    r"(?:grand|school)?kids?", r"kiddos?", r"kiddies", r"kiddie(?![ -]pools?\b)",
    r"toddlers?", r"infants?", r"newborns?", r"preschoolers?",
    r"kindergart(?:en|ens|ner|ners|ener|eners)",
    r"babies", rf"baby(?!'s breath\b)(?![ -](?:{_BABY_EXCEPTIONS})\b)",
    r"(?:school)?boys?", r"boyhood", r"(?:school)?girls?", r"girlhood", r"cub[ -]scouts?", r"tots?(?! of\b)",
    r"(?:pre-?)?teens?", r"teenagers?", r"teenaged?", r"tweens?",
    r"minors", rf"minor(?![ -](?:{_MINOR_EXCEPTIONS})\b)",
    r"(?:grand|step|god)?sons?", r"(?:grand|step|god)?daughters?",
    r"youngsters?", r"youths?(?! hostels?\b)",
)

_EN_NUMBER_0_15 = _words(
    r"1[0-5]", r"[0-9]",
    # A tens word in front makes it an adult: "twenty-one year old", "forty five
    # years old". Three lookbehinds because each must have a fixed width.
    r"(?<!(?:twenty|thirty|eighty|ninety)[ -])(?<!(?:forty|fifty|sixty)[ -])"
    r"(?<!seventy[ -])"
    r"(?:zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve"
    r"|thirteen|fourteen|fifteen)",
)
# "(?<!\w)" keeps "16" and "116" from matching as "6" and "16".
_EN_AGE = (
    rf"(?<!\w)(?:{_EN_NUMBER_0_15})[ -]?(?:(?:years?|yrs?)[ -]?olds?|y\.?o\b\.?)"
    # Anyone counted in months is a baby (a "6-month-old puppy" is a known false hit).
    rf"|(?<!\w)(?:\d+|{_EN_NUMBER_0_15})[ -]?months?[ -]?olds?"
    # "aged 7"; "aged 12 years" is left to the words around it (whisky is aged so).
    rf"|(?<!\w)aged[ -](?:{_EN_NUMBER_0_15})\b(?![ -]?(?:years?|yrs?|months?|weeks?|days?)\b)"
)

# --- Russian (text is already casefolded and ё -> е) ---------------------------

_RU_CHILD = _words(
    r"ребен(?:ок|ка|ку|ком|ке)", r"ребеноч\w*", r"ребятишк\w*",
    # "дет" alone is too short to use as a stem: детектив, детали, деталь.
    r"дет(?:и|ей|ям|ьми|ях)", r"детк(?:и|ам|ами|ах)", r"деток", r"детишк\w*",
    r"детвор\w*", r"детсад\w*", r"детств\w*",
    # "детский" (children's: детская площадка, детский сад) refuses: such a
    # place or thing is photographed with children in it.
    r"детск(?:ий|ая|ое|ие|ого|ой|ому|им|ую|их|ими|ом)",
    r"малыш\w*",  # incl. малышка, малышня
    r"пацан\w*", r"ребятн\w*",
    r"мальчик\w*", r"мальчишк\w*", r"мальчуган\w*",  # not мальчишник
    r"девоч(?:к\w*|ек)", r"девчон\w*",  # not девушка (young woman)
    r"(?:до)?школьни[кц]\w*", r"(?:перво|младше|старше)классни[кц]\w*",
    r"подрост(?:ок|к\w*)", r"тинейджер\w*",
    r"младен(?:ец|ц\w*|ч\w*)", r"новорожденн\w*", r"груднич\w*", r"карапуз\w*",
    r"сын(?:а|у|ом|е|ы|ов|ам|ами|ах|овь\w*|ок|к[аеиоу]\w*|очек|ишк\w*)?",  # not сыр
    # Not "дочерний" (subsidiary, as in "дочерняя компания").
    r"доч(?:ь|ер(?:и|ью|ей|ям|ьми|ях)|к\w*|ек|ур\w*|еньк\w*)",
    r"вну(?:к|ч)\w*",
    r"малолетн\w*", r"малолетк\w*", r"несовершеннолетн\w*",
)

_RU_NUMBER_0_15 = _words(
    # Not "однолетний": mostly "annual" (plants); a one-year-old is "годовалый".
    r"двух", r"трех", r"четырех", r"пяти", r"шести", r"семи", r"восьми",
    r"девяти", r"десяти", r"одиннадцати", r"двенадцати", r"тринадцати",
    r"четырнадцати", r"пятнадцати",
)
_RU_AGE = (
    # 5-летний, 5-ти летний, 5 летняя.
    r"(?<!\w)(?:1[0-5]|[0-9])(?:-?[а-я]{1,2})?[ -]?летн\w*"
    rf"|(?<!\w)(?:{_RU_NUMBER_0_15})летн\w*"
    # годовалый, полуторагодовалый, двухгодовалый: a toddler's age in any prefix.
    r"|\b\w*годовал\w*"
    # "мальчик 5 лет", "2 года", "2 годика"; "10 лет назад" is a time, not an age.
    r"|(?<!\w)(?:1[0-5]|[0-9]) (?:лет|года?|годик\w*)\b(?! (?:назад|спустя)\b)"
)

_CHECKS = re.compile(
    rf"(?P<age>{_EN_AGE}|{_RU_AGE})|\b(?P<child>{_EN_CHILD}|{_RU_CHILD})\b"
)
_REASONS = {"age": "mentions a child's age", "child": "mentions a child"}
_CYRILLIC = re.compile(r"[\u0400-\u04ff]")

# --- Other senses: a match whose neighbouring words give it a sense that is not a child ------------

_WORD = re.compile(r"[\w'’]+(?:-[\w']+)*")
# Nouns that an age can describe without a child in the picture: animals, drinks, food, things, plans.
_AGED_THINGS = (
    "scotch", "whisky", "whiskey", "rum", "cognac", "bourbon", "brandy", "wine", "port", "tequila", "cheese",
    "cheddar", "balsamic", "dog", "dogs", "puppy", "puppies", "cat", "cats", "kitten", "kittens", "horse", "horses",
    "mare", "stallion", "colt", "filly", "foal", "pony", "retriever", "labrador", "terrier", "spaniel", "shepherd",
    "poodle", "bulldog", "cow", "bull", "calf", "goat", "sheep", "parrot", "tortoise", "car", "cars", "truck",
    "bike", "motorcycle", "tractor", "laptop", "phone", "computer", "house", "building", "tree", "trees", "oak",
    "vine", "vines",
)
_RU_AGED_THINGS = (  # stems
    "коньяк", "вин", "виск", "сыр", "лошад", "кобыл", "жереб", "собак", "пес", "пса", "щен", "кот", "кош",
    "план", "юбиле", "автомобил", "машин", "дерев", "дуб", "гаранти", "контракт", "стаж",
)
# Words that end the description of an aged noun: "a 5-year-old with his dog" is about the 5-year-old.
_STOP = {"with", "and", "or", "on", "in", "at", "of", "by", "for", "to", "from", "playing", "holding", "и", "с",
         "со", "на", "в", "у", "за"}


def _words_around(norm: str, start: int, end: int) -> tuple[list[str], list[str]]:
    """The words before (nearest last) and after (nearest first) the span [start, end) of `norm`."""
    return [w.group(0) for w in _WORD.finditer(norm[:start])], [w.group(0) for w in _WORD.finditer(norm[end:])]


def _describes_a_thing(after: list[str]) -> bool:
    """An age followed, within two describing words, by an animal or a thing ("10-year-old golden retriever")."""
    for word in after[:3]:
        if word in _STOP:
            return False
        if word in _AGED_THINGS or any(word.startswith(stem) for stem in _RU_AGED_THINGS):
            return True
    return False


def _other_sense(match: re.Match, norm: str) -> bool:
    """True where the words around a matched term show that it does not name a child."""
    term = match.group(0)
    before, after = _words_around(norm, match.start(), match.end())
    previous, following = (before[-1] if before else ""), (after[0] if after else "")
    if match.lastgroup == "age":
        return _describes_a_thing(after)
    if term in ("kid", "kids"):
        return (following in ("goat", "goats", "leather", "glove", "gloves", "skin", "glove-treatment")
                or previous in ("goat's", "goat", "goats", "goats'")
                or " ".join(before[-2:]) == "billy the"
                or (previous in ("her", "its", "their") and re.search(r"\b(?:nanny|mother|mama) goats?\b", norm)
                    is not None))
    if term == "child":
        return previous in ("julia", "lee", "lydia", "francis", "mr", "mrs", "ms", "dr")
    if term == "son":
        return following in ("cubano", "jarocho", "doong") or " ".join(after[:2]) in ("et lumière", "et lumiere")
    if term == "childhood":
        return following in ("home", "homes", "house", "houses", "friend", "friends", "sweetheart", "sweethearts",
                             "hometown", "town", "street", "neighborhood", "neighbourhood", "village")
    if term == "minor":
        return previous == "asia"
    if term == "youth":
        return " ".join(before[-2:]) == "fountain of"
    if term == "внуково":  # Vnukovo, the Moscow airport
        return True
    if term == "детства":
        return previous in ("дом", "дома", "доме", "друзья", "друзей", "друг", "друга", "подруга", "подруги",
                            "город", "улица", "улицы")
    return False


def check_query(text: str) -> QueryVerdict:
    """Refuse text that mentions a child (under 16) in English or Russian."""
    norm = normalize(text)
    language = "ru" if _CYRILLIC.search(norm) else "en"
    for match in _CHECKS.finditer(norm):
        if not _other_sense(match, norm):
            reason = f'{_REASONS[match.lastgroup]} ("{match.group(0)}")'
            return QueryVerdict(refused=True, reason=reason, language=language)
    return QueryVerdict(refused=False, reason=None, language=language)


def mentions_child(text: str) -> bool:
    return check_query(text).refused
