"""The words of the legal query rules (wsense.safety.rules): what names a child, an age under 16 or a school year,
in English and Russian, and the closed lists of explicit evidence that a match means something else.

Every list is a regex alternative over normalised text (wsense.safety.rules.normalize: casefolded, ё -> е). The
operators' version, with the reasons behind each list: docs/legal_filter.md.
"""
from __future__ import annotations


def alternatives(*words: str) -> str:
    return "|".join(words)


# --- English: words that name a child --------------------------------------------------------------------------

EN_CHILD = alternatives(
    r"(?:grand|step|god|school|foster)?child(?:ren|s|hood)?", r"(?:grand|school)?kids?", r"kiddos?", r"kidd(?:ie|y)s?",
    r"toddlers?", r"toddlerhood", r"infants?", r"newborns?", r"preemies?", r"babies", r"baby", r"babes? in arms",
    r"(?:school)?boys?", r"boyhood", r"(?:school)?girls?", r"girlhood", r"tots?", r"youngsters?", r"youths?",
    r"(?:pre-?)?teens?", r"teenagers?", r"teenaged?", r"tweens?", r"(?:pre-?)?adolescents?", r"adolescence",
    r"(?:pre-?)?pubescent", r"juveniles?", r"minors?", r"underage", r"under-age",
    r"(?:grand|step|god)?sons?", r"(?:grand|step|god)?daughters?", r"nieces?", r"nephews?",
    # Informal words and the objects that come with a baby.
    r"(?:wee|little)[ -]ones?", r"(?:little|wee|young|small)[ -](?:lads?|lass(?:es)?|laddies?|lassies?|miss)",
    r"laddies?", r"lassies?", r"tykes?", r"tikes?", r"young'?uns?", r"youngins?", r"nann(?:y|ies)", r"montessori",
    r"rugrats?", r"nippers?", r"bairns?", r"sprogs?", r"munchkins?",
    r"ankle[ -]?biters?", r"small fry", r"moppets?", r"papooses?", r"whippersnappers?", r"urchins?", r"younglings?",
    r"(?:little|kid|baby)[ -](?:brothers?|sisters?|bro|sis|cousins?)", r"(?:young|small)[ -]cousins?",
    r"first[ -]day[ -]of[ -]school", r"(?:baby'?s? )?first[ -]steps", r"learning[ -]to[ -]walk", r"training[ -]wheels",
    r"santa'?s[ -](?:lap|knee)", r"school[ -]run", r"easter[ -]egg[ -]hunts?", r"(?:lad|lass|laddie|lassie|bairn)s? of",
    r"trick[ -]or[ -]treaters?",
    r"strollers?", r"prams?", r"pushchairs?", r"bassinets?", r"playpens?", r"diapers?", r"nappy", r"nappies",
    r"pacifiers?", r"sippy[ -]cups?", r"babys", r"weans", r"littlies", r"pickney", r"gurls?", r"pre-?skool",
    r"(?:rainbows?|brownies?|daisy|daisies)[ -](?:units?|troops?|guides?)", r"high[ -]?chairs?", r"flower[ -]girls?",
    r"ring[ -]bearers?",
)

# School years and youth groups: "third graders", "a 5th grade class", "middle schoolers", "U12", "cub scouts".
_ORDINAL_TO_TENTH = (r"(?:1st|2nd|3rd|[4-9]th|10th|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth"
                     r"|tenth)")
EN_SCHOOL = alternatives(
    rf"{_ORDINAL_TO_TENTH}[ -]?grade(?:rs?)?", r"grade[ -](?:[1-9]|10|one|two|three|four|five|six|seven|eight|nine"
    r"|ten|k)\b(?:[ -](?:class(?:es|room)?|students?|pupils?|kids|teachers?))?",
    r"(?:elementary|primary|middle|junior[ -]high|junior|grade|nursery|infant|pre|prep|boarding|sunday|bible)[ -]?"
    r"schools?(?:ers?)?", r"junior[ -]high", r"(?:elementary|grade[ -]school)[ -](?:students?|kids|class(?:es|rooms?)?"
    r"|pupils?|teachers?)", r"year[ -](?:[1-9]|10)[ -](?:leavers?|pupils?|class(?:es)?|students?|kids|children"
    r"|assembly|group|trip|teachers?|sats|nativity)",
    r"\w*[ -]?schoolers?", r"schoolyards?", r"school[ -]?(?:yard|playground|recess)s?",
    r"kindergart(?:en|ens|ner|ners|ener|eners)", r"pre-?k", r"daycares?", r"day[ -]care", r"creches?",
    r"high[ -]school[ -](?:students?|freshm[ae]n|sophomores?|pupils?|class(?:es|rooms?)?|teams?|football|basketball"
    r"|soccer|volleyball|baseball|softball|cheerleaders?|athletes?|players?|gym|cafeteria|hallways?|lockers?)",
    r"pupils?", r"(?:cub|boy|girl)[ -]scouts?", r"scouts", r"scout[ -]troops?",
    r"brownies?[ -](?:troops?|guides?|pack)",
    r"girl[ -]guides?", r"little[ -]league(?:rs?)?", r"pee[ -]?wee(?:s)?", r"pop[ -]warner",
    r"t-?ball", r"tee[ -]?ball", r"u-?(?:[6-9]|1[0-8])s?",
    r"under[ -](?:[1-9]|1[0-8])s", r"(?:[5-9]|1[0-8])u", r"under-(?:[6-9]|1[0-8])",
    r"under[ -](?:twos|threes|fours|fives|sixes|sevens|eights|nines|tens|elevens|twelves)",
    r"under (?:[6-9]|1[0-8]) (?:teams?|league|squad|side|players?)",
)

# --- English: ages -----------------------------------------------------------------------------------------------

EN_NUMBER_0_15 = alternatives(
    r"1[0-5]", r"[0-9]",
    # A tens word in front makes it an adult: "twenty-one year old". Three lookbehinds: each must be fixed-width.
    r"(?<!(?:twenty|thirty|eighty|ninety)[ -])(?<!(?:forty|fifty|sixty)[ -])(?<!seventy[ -])"
    r"(?:zero|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve|thirteen|fourteen|fifteen|a half)",
)
EN_NUMBER_WORDS = alternatives(  # any count of months: "an eighteen-month-old"
    r"sixteen", r"seventeen", r"eighteen", r"nineteen", r"twenty(?:[ -](?:one|two|three|four|five|six|seven|eight"
    r"|nine))?", r"thirty(?:[ -](?:one|two|three|four|five|six))?")
_N = rf"(?<!\w)(?:{EN_NUMBER_0_15})"
_ORDINAL_0_15 = (r"(?:1st|2nd|3rd|[4-9]th|1[0-5]th|first|second|third|fourth|fifth|sixth|seventh|eighth|ninth|tenth"
                 r"|eleventh|twelfth|thirteenth|fourteenth|fifteenth)")
EN_AGE = alternatives(
    rf"{_N}(?:[ -]and[ -]a[ -]half)?[ -]?(?:years?|yrs?|yr)[ -]?olds?(?:'s)?",
    rf"{_N}[ -]?y/?o\b\.?", rf"{_N}[ -]?y[-.]o\b\.?", rf"{_N}[ -]?yrs?\b\.?", rf"{_N} years? of age",
    rf"(?<!\w)aged[ -](?:{EN_NUMBER_0_15})\b", rf"(?<!\w)ages?[ -](?:{EN_NUMBER_0_15})\b",
    # Anyone counted in months, weeks or days is a baby; animals are excepted by the words around (AGED_THINGS).
    rf"(?<!\w)(?:\d+|{EN_NUMBER_0_15}|{EN_NUMBER_WORDS})[ -]?(?:months?|weeks?|days?)[ -]?olds?",
    r"(?<!\w)\d{1,2}[ -]?mos?\b(?! ago)", r"(?<!\w)class of (?:20\d\d)\b",
    # A birth year no more than 15 years back: "born in 2014", "2014 года рождения", "2016 г.р." (checked in rules).
    r"(?<!\w)born (?:in )?(?:19|20)\d\d\b", r"(?<!\w)(?:19|20)\d\d (?:года? рождения|г\.? ?р\b\.?)",
    rf"(?<!\w){_ORDINAL_0_15}[ -]birthdays?",
)

# --- Russian (normalised: casefolded, ё -> е) -------------------------------------------------------------------

RU_CHILD = alternatives(
    r"ребен(?:ок|ка|ку|ком|ке)", r"ребеноч\w*", r"ребятишк\w*", r"ребятн\w*", r"ребенк\w*",
    # "дет" alone is too short to use as a stem: детектив, детали, деталь.
    r"дет(?:и|ей|ям|ьми|ях)", r"детк(?:и|ам|ами|ах)", r"деток", r"детишк\w*", r"детвор\w*", r"детсад\w*",
    r"детств\w*", r"детск(?:ий|ая|ое|ие|ого|ой|ому|им|ую|их|ими|ом)", r"дит(?:я|яти|ятко|ятки|е)", r"чадо",
    r"малыш(?!ев)\w*", r"малют\w*", r"пацан\w*", r"карапуз\w*", r"крох(?:а|и|е|у|ой)", r"крохотул\w*", r"крохотк\w*",
    r"шкет\w*", r"мелюзг\w*",
    r"мелкот\w*", r"бутуз\w*", r"отпрыск\w*", r"сорван(?:ец|ц\w*)",
    r"мальчик\w*", r"мальчишк\w*", r"мальчуган\w*", r"мальчонк\w*",  # not мальчишник
    r"девоч(?:к\w*|ек)", r"девчон\w*", r"девчушк\w*",  # not девушка (young woman)
    r"(?:до)?школьни[кц]\w*", r"школот\w*", r"школяр\w*", r"ученик\w*", r"учениц\w*", r"первоклашк\w*",
    r"(?:перво|второ|третье|четверо|пяти|шести|семи|седьмо|восьми|девяти|десяти|младше|старше)классни[кц]\w*",
    r"(?:перво|второ|третье|четверо|пяти|шести|семи|седьмо|восьми|девяти|десяти)клашк\w*", r"малявк\w*",
    r"мал(?:ец|ьц(?:а|у|ом|е|ы|ов|ам|ами|ах))", r"племяш\w*", r"роддом\w*", r"молочн\w* зуб\w*",
    r"самых маленьких", r"пионер(?:ы|ов|ам|ами|ах|ка|ки|ок)", r"продленк\w*", r"продленного дня",
    r"(?:подготовительн|ясельн|младш|средн|старш)\w* групп\w*", r"нян(?:я|и|е|ю|ей|ечк\w*|ьк\w*)",
    r"первы\w* шаг\w*", r"перв\w* сентябр\w*", r"1 сентября",
    # Spellings by ear: "децкий сад", "первакласники", "мальчег".
    r"децк\w*", r"перв[оа]клас+ни[кц]\w*", r"мальч(?:ег|ек|ишк)\w*",
    r"детсадовц\w*", r"ясл(?:и|ях|ям|ей)", r"ясельк\w*", r"дошколен\w*", r"лял(?:я|и|е|ю|ей|ечк\w*)",
    r"голопузик\w*", r"хлопч\w*", r"дытын\w*", r"спиногрыз\w*", r"бэби", r"кид(?:ы|ов|ам|ами|ах|у|ом)?",
    r"дэт(?:и|ей|ям|ьми|ях)", r"полгодик\w*", r"(?:дней|дня|недел\w*) от рождения", r"утренник\w*", r"октябрят\w*",
    r"скаут\w*",
    r"подрост(?:ок|к\w*)", r"тинейджер\w*", r"юн(?:ый|ая|ое|ые|ого|ой|ому|ым|ых|ыми|ую|ом)",
    r"младен(?:ец|ц\w*|ч\w*)", r"новорожденн\w*", r"груднич\w*", r"коляск\w*", r"подгузник\w*", r"пустышк\w*",
    r"сын(?:а|у|ом|е|ы|ов|ам|ами|ах|овь\w*|ок|к[аеиоу]\w*|очек|ишк\w*)?",  # not сыр
    # Not "дочерний" (subsidiary, as in "дочерняя компания").
    r"доч(?:ь|ер(?:и|ью|ей|ям|ьми|ях)|к\w*|ек|ур\w*|еньк\w*)", r"вну(?:к|ч)\w*", r"племянни\w*",
    r"сестренк\w*", r"сестричк\w*", r"братишк\w*", r"братик\w*", r"младш\w* (?:брат|сестр)\w*",
    r"малолетн\w*", r"малолетк\w*", r"несовершеннолетн\w*",
    r"(?:начальн|младш)\w* школ\w*",
)

RU_NUMBER_0_15 = alternatives(  # in words, in the cases an age takes: "пять лет", "пяти лет", "три года"
    r"ноль", r"один", r"одного", r"одному", r"два", r"двух", r"две", r"три", r"трех", r"четыре", r"четырех", r"пять",
    r"пяти", r"шесть", r"шести", r"семь", r"семи", r"восемь", r"восьми", r"девять", r"девяти", r"десять", r"десяти",
    r"одиннадцать", r"одиннадцати", r"двенадцать", r"двенадцати", r"тринадцать", r"тринадцати", r"четырнадцать",
    r"четырнадцати", r"пятнадцать", r"пятнадцати", r"полтора", r"полутора",
)
_RU_COMPOUND_0_15 = alternatives(  # the first half of "пятилетний", "двухлетка"
    r"двух", r"трех", r"четырех", r"пяти", r"шести", r"семи", r"восьми", r"девяти", r"десяти", r"одиннадцати",
    r"двенадцати", r"тринадцати", r"четырнадцати", r"пятнадцати", r"полуто?ра",
)
RU_TENS = ("двадцать", "тридцать", "сорок", "пятьдесят", "шестьдесят", "семьдесят", "восемьдесят", "девяносто")
RU_AGE = alternatives(
    # 5-летний, 5-ти летний, 5 летняя, пятилетний; "однолетний" mostly means "annual" (plants).
    r"(?<!\w)(?:1[0-5]|[0-9])(?:-?[а-я]{1,2})?[ -]?летн\w*", rf"(?<!\w)(?:{_RU_COMPOUND_0_15})летн\w*",
    rf"(?<!\w)(?:{_RU_COMPOUND_0_15})летк\w*", r"\b\w*годовал\w*", r"годовасик\w*",
    # "мальчик 5 лет", "2 года", "пяти лет", "10 месяцев"; durations are excepted by the words around.
    rf"(?<!\w)(?:1[0-5]|[0-9]|{RU_NUMBER_0_15}) (?:лет|года?|годик\w*|годков)\b",
    rf"(?<!\w)(?:\d+|{RU_NUMBER_0_15}) (?:месяц\w*|мес\b\.?|недел[ьи])", r"(?<!\w)(?:1[0-5]|[0-9]) г\.(?! ?р)",
    r"в возрасте (?:до )?(?:1[0-5]|[0-9]|" + RU_NUMBER_0_15 + r")\b",
)
RU_SCHOOL = alternatives(
    r"(?<!\w)(?:[1-9]|10)(?:-?[а-я]{1,3})?[ -]класс\w*",
    r"(?<!\w)(?:перв|втор|трет|четверт|пят|шест|седьм|восьм|девят|десят)\w{0,4}[ -]класс\w*",
)

# --- Explicit evidence of another sense ------------------------------------------------------------------------

# Known names and fixed phrases whose child word names no child.
NAMES = (
    "boy george", "beach boys", "pet shop boys", "backstreet boys", "beastie boys", "jersey boys", "bad boys",
    "new kids on the block", "boyz ii men", "boys ii men", "karate kid", "kids in the hall",
    "spice girls", "golden girls", "girls aloud", "gone girl",
    "material girl", "girl with a pearl earring", "girl with the pearl earring", "girl with the dragon tattoo",
    "kid rock", "kid cudi", "kid creole", "billy the kid", "julia child", "lee child", "destiny's child",
    "child's pose", "childs pose", "sons of anarchy", "mumford and sons", "mumford & sons", "son of god",
    "son of man", "minor threat", "sonic youth", "fountain of youth", "asia minor", "ursa minor", "baby driver",
    "million dollar baby", "old boys", "old boys'", "old boy", "girls' night", "girls night", "girls' night out",
    "girls night out", "cover girl", "bond girl", "bond girls", "it girl", "ring girl", "ring girls", "pin-up girl",
    "pinup girl", "chorus girls", "poster girl", "poster boy", "sea urchin", "sea urchins", "babe ruth",
    "сыновья анархии", "сыны анархии", "внуково", "деточкин", "daughters of the american revolution", "baby spice",
    "prodigal son", "блудного сына", "блудный сын", "отцы и дети", "bad boy", "bad-boy", "child process",
    "child processes", "son-in-law", "sons-in-law", "daughter-in-law", "daughters-in-law", "girl group",
    "girl groups", "boy band", "boy bands", "the boys tv", "boys in blue", "gossip girl", "boys noize", "baby yoda",
    "happy baby pose", "girl scout cookie", "girl scout cookies", "tater tots", "детский мир", "детское село",
    "детском селе", "детского села", "малышка на миллион", "дети пикассо", "дети picasso", "малыш на драйве",
    "капитанская дочка", "капитанской дочки", "gibson girl", "gibson girls", "teenage mutant ninja turtles",
    "smells like teen spirit", "child's play", "sweet child o' mine", "sweet child o mine", "son heung-min",
    "big boy", "дети арбата", "дети солнца", "дети капитана гранта", "child node", "child nodes", "child element",
    "child elements",
    "children's book",
    "children's books", "children's literature", "поза ребенка", "позе ребенка", "позу ребенка", "позы ребенка",
)
# Things called "baby", "newborn" or "juvenile" that are not a child: young animals, colours, vegetables, objects.
YOUNG_ANIMALS = (
    "animal", "bird", "elephant", "goat", "deer", "duck", "duckling", "seal", "turtle", "owl", "fox", "bear", "lion",
    "horse", "cow", "sheep", "lamb", "monkey", "penguin", "giraffe", "zebra", "rhino", "dolphin", "whale", "hedgehog",
    "panda", "kangaroo", "otter", "calf", "calves", "rabbit", "bunny", "bunnies", "hippo", "koala", "sloth", "tiger",
    "gorilla", "chimp", "orangutan", "camel", "llama", "alpaca", "pig", "piglet", "squirrel", "raccoon", "chick",
    "chicken", "puppy", "puppies", "kitten", "foal", "pony", "ponies", "donkey", "bison", "buffalo", "moose", "elk",
    "fawn", "cub", "cubs", "wolf", "wolves", "eagle", "hawk", "swan", "cygnet", "gosling", "goose", "geese", "robin",
    "sparrow", "shark", "octopus", "crocodile", "alligator", "snake", "lizard", "frog", "tadpole", "bat", "mouse",
    "mice", "hamster", "guinea", "ferret", "beaver", "badger", "leopard", "cheetah", "jaguar", "puma", "lynx",
    "walrus", "manatee", "orca", "flamingo", "ostrich", "emu", "parrot", "pigeon", "dove", "gull", "mare", "filly",
    "colt", "kid", "kids", "bull", "ox", "yak", "reindeer", "wildebeest", "antelope", "gazelle", "meerkat", "lemur",
)
BABY_THINGS = (
    "blue", "pink", "carrot", "carrots", "spinach", "corn", "potato", "potatoes", "tomato", "tomatoes", "bok",
    "back", "grand", "shower", "showers", "boomer", "boomers", "bump", "pool", "breath", "doll", "dolls",
    "monitor", "food", "formula", "wipes", "powder", "shampoo", "lotion", "oil", "clothes", "shoes", "bottle",
    "bottles", "gate", "gates",
)
MINOR_THINGS = ("league", "leaguer", "leaguers", "key", "chord", "chords", "scale", "scales", "detail", "details",
                "injury", "injuries", "repair", "repairs", "damage", "road", "roads", "planet", "planets", "prophet",
                "prophets", "surgery", "role", "roles", "issue", "issues", "change", "changes", "flaw", "flaws")
# Nouns that an age can describe without a child in the picture: drinks, food, animals, things, plans.
AGED_THINGS = YOUNG_ANIMALS + (
    "scotch", "whisky", "whiskey", "rum", "cognac", "bourbon", "brandy", "wine", "port", "tequila", "mezcal",
    "sake", "beer", "vinegar", "balsamic", "cheese", "cheddar", "gouda", "parmesan", "ham", "prosciutto", "steak",
    "beef", "starter", "sourdough", "kombucha", "dog", "dogs", "cat", "cats", "kittens", "horses", "stallion",
    "retriever", "labrador", "lab", "terrier", "spaniel", "shepherd", "poodle", "bulldog", "beagle", "husky",
    "collie", "dachshund", "pug", "corgi", "greyhound", "rottweiler", "tabby", "tortoise", "goldfish", "car",
    "cars", "truck", "trucks", "van", "bike", "bicycle", "motorcycle", "tractor", "boat", "yacht", "plane",
    "laptop", "phone", "iphone", "computer", "camera", "lens", "guitar", "piano", "violin", "house", "home",
    "building", "barn", "church", "bridge", "tree", "trees", "oak", "oaks", "bonsai", "vine", "vines", "vineyard",
    "orchard", "garden", "rose", "roses", "plant", "plants", "cactus", "fern", "company", "business", "startup",
    "brand", "blog", "website", "tradition", "marriage", "relationship", "friendship", "project", "plan",
    "mattress", "sofa", "couch", "carpet", "rug", "tires", "tyres", "battery", "roof", "fence", "shoes", "boots",
    "jeans", "jacket", "coat", "painting", "photo", "photograph", "print", "map", "newspaper", "magazine",
    "bottle", "barrel", "cask", "thoroughbred", "racehorse", "gelding", "mule", "oven", "kiln", "restaurant", "cafe",
    "bar", "pub", "shop", "store", "tattoo",
    "tattoos", "mower", "pan", "skillet", "kitchen", "office", "bathroom", "apartment", "flat", "table", "chair",
    "desk", "bed", "beard", "sneakers", "shirt", "dress", "suit", "watch", "ring", "software", "server", "account",
)
# After an aged animal or thing, a noun that makes the phrase a person: "a 7-year-old dog lover".
PERSON_NOUNS = ("lover", "lovers", "owner", "owners", "walker", "walkers", "trainer", "breeder", "fan", "fans",
                "person", "people", "rider", "riders", "sitter", "whisperer", "keeper", "driver", "enthusiast",
                "collector", "master", "groomer", "photographer", "boy", "girl", "kid", "child", "player", "players")
RU_AGED_THINGS = (  # stems
    "коньяк", "вин", "виск", "ром", "сыр", "лошад", "кобыл", "жереб", "собак", "пес", "пса", "щен", "кот", "кош",
    "план", "юбиле", "автомобил", "машин", "дерев", "дуб", "гаранти", "контракт", "стаж", "выдерж", "бренд",
    "компани", "фирм", "дом", "здани", "велосипед", "мотоцикл", "телефон", "ноутбук", "сад", "бык", "коров",
    "теленок", "телят", "ягнен", "козл", "козел", "кроли", "попуга", "черепах", "лабрадор", "овчарк", "терьер",
    "бычк", "бычок", "телк", "пармезан", "заквас", "яблон", "груш", "вишн", "слив", "сосн", "ел", "куст", "виноград",
)
# Emptiness: explicit evidence that a children's place or thing is photographed without people.
EMPTY = ("empty", "deserted", "abandoned", "nobody", "no people", "without people", "no children", "no kids",
         "without children", "no students", "before students", "for adults", "adults only", "alone", "product photo",
         "product shot", "isolated", "white background", "flat lay", "flatlay", "showroom", "flea market",
         "furniture store", "store display", "for sale", "museum", "без людей", "без детей", "без учеников",
         "для взрослых", "пуст", "заброшенн", "безлюдн", "на белом фоне", "флэтлей", "в музее", "в магазине",
         "building", "exterior", "facade", "здание", "здания", "фасад", "снаружи", "для щенков", "для собак",
         "для кошек", "для животных", "для питомцев", "для кукол", "кукольн", "shelf", "shelves", "aisle",
         "supermarket", "pharmacy", "folded", "сложен", "склад", "в коробке", "упаковк", "витрин")
# Evidence of grown-up schooling for a school word: "1 сентября в академии", "kindergarten teacher training".
ADULT_SCHOOLING = ("university", "college", "academy", "cadets", "adult", "adults", "вуз", "университет",
                   "академи", "курсант", "студент", "институт", "взросл")
# Words just before a child word that make it a name: "улица Детская", "пёс по кличке Малыш".
NAME_BEFORE = ("улица", "улицы", "ул", "станция", "метро", "кличке", "named", "called", "street")
# After "детский": an adult who works with children, not a child ("детский врач", "детская писательница").
RU_CHILD_PROFESSIONS = ("врач", "психолог", "писател", "поэт", "стоматолог", "хирург", "офтальмолог", "невролог",
                        "омбудсмен", "фотограф")
# Words that name a place or a thing made for children, not a child: excused on EMPTY evidence or for animals.
CHILD_THINGS = ("stroller", "strollers", "pram", "prams", "pushchair", "pushchairs", "bassinet", "bassinets",
                "playpen", "playpens", "diaper", "diapers", "nappy", "nappies", "pacifier", "pacifiers", "onesie",
                "onesies", "sippy cup", "sippy cups", "high chair", "high chairs", "highchair", "highchairs",
                "kindergarten", "kindergartens", "preschool", "preschools", "daycare", "daycares", "day care",
                "nursery school", "primary school", "elementary school", "schoolyard", "montessori")
CHILD_THING_STEMS = ("детск", "коляск", "подгузник", "пустышк", "ясл", "детсад", "роддом", "подростков", "утренник",
                     "1 сентябр", "первое сентябр")
# A child word right before one of these names a product, not a child: "an empty infant car seat", "toddler bed".
CHILD_PRODUCTS = ("car", "seat", "seats", "bed", "beds", "formula", "food", "clothes", "clothing", "shoes", "toys",
                  "books", "furniture", "monitor", "bottle", "bottles", "gate", "crib", "cot", "stroller", "carrier",
                  "swing", "bike", "helmet", "costume", "costumes", "section")
ANIMAL_OWNERS = ("puppy", "puppies", "dog", "dogs", "doggy", "doggie", "pet", "pets", "cat", "cats", "kitten")
# A family word with an adult right beside it is an adult: "adult children", "взрослая дочь", "сын 40 лет".
FAMILY = ("son", "sons", "daughter", "daughters", "grandson", "grandsons", "granddaughter", "granddaughters",
          "children", "kids", "child", "kid", "stepson", "stepdaughter")
FAMILY_STEMS = ("сын", "доч", "вну", "дет", "племянн")
ADULT_MARKERS = ("adult", "adults", "grown", "grown-up", "grownup", "middle-aged", "former", "бывшие", "бывший",
                 "бывшая", "бывших", "взрослый", "взрослая",
                 "взрослые", "взрослого", "взрослой", "взрослым", "взрослыми", "взрослых", "взрослую", "взрослое")
# Correct spellings that a one-letter slip of a query should still find ("childern", "ребенек", "девачка").
SPELLING_KEYS = (
    "children", "toddler", "toddlers", "teenager", "teenagers", "newborn", "newborns", "schoolboy", "schoolboys",
    "schoolgirl", "schoolgirls", "kindergarten", "preschooler", "preschoolers", "youngster", "youngsters",
    "ребенок", "ребенка", "ребенку", "ребенком", "детишки", "детишек", "девочка", "девочки", "девочку", "девочкой",
    "мальчик", "мальчики", "мальчика", "школьник", "школьники", "школьница", "школьницы", "малыши", "малышка",
    "младенец", "детский", "детская", "детские", "первоклассник", "первоклассники", "подросток", "подростки",
    "child", "infant", "nephew", "nephews", "nieces", "ребятишки", "детишки",
)
NOT_SLIPS = ("infanta", "infantas", "chilly", "chilled")  # real words one slip from a key
RU_YOUNG_ANIMALS = (  # stems after "новорожденный"
    "жереб", "теленок", "теля", "ягнен", "ягнят", "козл", "щен", "кот", "тюлен", "слон", "медвеж", "поросен",
    "поросят", "лисят", "волчон", "олен", "зебр", "жираф", "кенгуру", "панд", "птен", "цыпл", "утят", "гусят",
    "детеныш", "кроль", "зайч", "бельк", "верблюж", "тигр", "львен", "львят", "бегемот", "жирафен",
)
# Words that end the description of an aged noun: "a 5-year-old with his dog" is about the 5-year-old.
STOP = {"with", "and", "or", "on", "in", "at", "of", "by", "for", "to", "from", "playing", "holding", "under",
        "near", "next", "beside", "behind", "who", "that", "while", "eating", "riding", "wearing", "is", "are",
        "и", "с", "со", "на", "в", "у", "за", "возле", "рядом", "под", "около", "который", "которая", "играет"}
# Russian durations: "на 5 лет", "10 лет назад", "коньяк 10 лет выдержки".
RU_DURATION_BEFORE = {"на", "за", "через", "течение", "последние", "уже", "спустя", "срок", "срока", "сроком", "раз"}
RU_DURATION_AFTER = {"назад", "спустя", "подряд", "гарантии", "стажа", "выдержки", "брака", "работы", "службы",
                     "тюрьмы", "жизни", "назад,", "эксплуатации", "пробега"}
RU_FIRST_CLASS = {"билет", "билеты", "билета", "вагон", "вагона", "вагоны", "каюта", "каюты", "каюте", "салон",
                  "салона", "отель", "отеля", "гостиница", "гостиницы", "сервис", "обслуживание", "специалист"}
