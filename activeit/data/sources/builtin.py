"""The builtin suite: an offline default pool generated deterministically in code.

44 tasks in 9 families (15 classification). Within a family every task reads the *same* inputs (the same
word lists, number pairs, sentences, countries, ...) and differs only by its
instruction, so a model must read the definition to answer: "return the last word",
"count the words" and "reverse the word order" all see the same lists. This makes
instruction sensitivity, the quantity prompt uncertainty measures, genuinely vary between
tasks. Classification tasks name their small label set in the definition
(``is_classification=True``); generation tasks have short free outputs.

Each task has 42-60 instances, two positive examples with different outputs (for
classification, two different labels) and one negative example (the answer a sibling
instruction of the family would give, with its explanation). Categories are family names.
10 tasks (23%, from all 9 families, 4 of them classification) form the test split.

Everything is derived from fixed tables and ``random.Random("activeit-builtin:<family>")``,
so the suite is identical on every machine and run; outputs are kept short because the
default model is small and runs on a CPU.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from activeit.data.tasks import Example, Instance, Task, TaskPool

RESERVED = 8  # items per family kept for demonstrations, never instances

MONTHS = (
    "January", "February", "March", "April", "May", "June", "July", "August",
    "September", "October", "November", "December",
)
SEASONS = ("winter", "winter", "spring", "spring", "spring", "summer", "summer", "summer",
           "autumn", "autumn", "autumn", "winter")
NOUNS = (
    "river", "chair", "garden", "window", "pencil", "rabbit", "candle", "bottle", "forest",
    "button", "rocket", "castle", "bridge", "guitar", "planet", "jacket", "mirror", "ladder",
    "pillow", "basket", "carrot", "kettle", "lemon", "tiger", "cloud", "stone", "train",
    "bread", "horse", "plate", "sugar", "tower", "paper", "grape", "snake", "clock", "table",
    "honey", "piano", "shirt", "sheep", "beach", "dream", "smile", "light", "queen",
)
VOWEL_NOUNS = (
    "apple", "orange", "ocean", "island", "engine", "eagle", "umbrella", "igloo", "anchor",
    "elbow", "olive", "arrow", "insect", "oven", "uncle", "onion", "owl", "acorn", "elephant",
    "iron", "amber", "otter", "echo", "ink",
)
#: (country, capital, continent)
COUNTRIES = (
    ("France", "Paris", "Europe"), ("Germany", "Berlin", "Europe"), ("Italy", "Rome", "Europe"),
    ("Spain", "Madrid", "Europe"), ("Portugal", "Lisbon", "Europe"), ("Greece", "Athens", "Europe"),
    ("Poland", "Warsaw", "Europe"), ("Sweden", "Stockholm", "Europe"), ("Norway", "Oslo", "Europe"),
    ("Finland", "Helsinki", "Europe"), ("Ireland", "Dublin", "Europe"), ("Austria", "Vienna", "Europe"),
    ("Hungary", "Budapest", "Europe"), ("Netherlands", "Amsterdam", "Europe"),
    ("Belgium", "Brussels", "Europe"), ("Denmark", "Copenhagen", "Europe"),
    ("Switzerland", "Bern", "Europe"), ("Czechia", "Prague", "Europe"),
    ("Romania", "Bucharest", "Europe"), ("Ukraine", "Kyiv", "Europe"),
    ("Japan", "Tokyo", "Asia"), ("China", "Beijing", "Asia"), ("India", "New Delhi", "Asia"),
    ("Thailand", "Bangkok", "Asia"), ("Vietnam", "Hanoi", "Asia"), ("Indonesia", "Jakarta", "Asia"),
    ("Philippines", "Manila", "Asia"), ("South Korea", "Seoul", "Asia"), ("Iran", "Tehran", "Asia"),
    ("Iraq", "Baghdad", "Asia"), ("Nepal", "Kathmandu", "Asia"),
    ("Egypt", "Cairo", "Africa"), ("Kenya", "Nairobi", "Africa"), ("Nigeria", "Abuja", "Africa"),
    ("Ghana", "Accra", "Africa"), ("Ethiopia", "Addis Ababa", "Africa"), ("Morocco", "Rabat", "Africa"),
    ("Senegal", "Dakar", "Africa"), ("Uganda", "Kampala", "Africa"), ("Algeria", "Algiers", "Africa"),
    ("Canada", "Ottawa", "North America"), ("Mexico", "Mexico City", "North America"),
    ("United States", "Washington", "North America"), ("Cuba", "Havana", "North America"),
    ("Jamaica", "Kingston", "North America"), ("Panama", "Panama City", "North America"),
    ("Brazil", "Brasilia", "South America"), ("Argentina", "Buenos Aires", "South America"),
    ("Chile", "Santiago", "South America"), ("Peru", "Lima", "South America"),
    ("Colombia", "Bogota", "South America"), ("Venezuela", "Caracas", "South America"),
    ("Ecuador", "Quito", "South America"), ("Uruguay", "Montevideo", "South America"),
    ("Australia", "Canberra", "Oceania"), ("New Zealand", "Wellington", "Oceania"),
    ("Fiji", "Suva", "Oceania"),
)
#: (animal, plural, class, legs, flies)
ANIMALS = (
    ("dog", "dogs", "mammal", 4, False), ("cat", "cats", "mammal", 4, False),
    ("horse", "horses", "mammal", 4, False), ("cow", "cows", "mammal", 4, False),
    ("sheep", "sheep", "mammal", 4, False), ("mouse", "mice", "mammal", 4, False),
    ("rabbit", "rabbits", "mammal", 4, False), ("bear", "bears", "mammal", 4, False),
    ("wolf", "wolves", "mammal", 4, False), ("fox", "foxes", "mammal", 4, False),
    ("deer", "deer", "mammal", 4, False), ("lion", "lions", "mammal", 4, False),
    ("tiger", "tigers", "mammal", 4, False), ("elephant", "elephants", "mammal", 4, False),
    ("giraffe", "giraffes", "mammal", 4, False), ("zebra", "zebras", "mammal", 4, False),
    ("goat", "goats", "mammal", 4, False), ("pig", "pigs", "mammal", 4, False),
    ("camel", "camels", "mammal", 4, False), ("squirrel", "squirrels", "mammal", 4, False),
    ("hamster", "hamsters", "mammal", 4, False), ("donkey", "donkeys", "mammal", 4, False),
    ("whale", "whales", "mammal", 0, False), ("dolphin", "dolphins", "mammal", 0, False),
    ("bat", "bats", "mammal", 2, True), ("kangaroo", "kangaroos", "mammal", 2, False),
    ("eagle", "eagles", "bird", 2, True), ("owl", "owls", "bird", 2, True),
    ("parrot", "parrots", "bird", 2, True), ("duck", "ducks", "bird", 2, True),
    ("goose", "geese", "bird", 2, True), ("swan", "swans", "bird", 2, True),
    ("crow", "crows", "bird", 2, True), ("pigeon", "pigeons", "bird", 2, True),
    ("sparrow", "sparrows", "bird", 2, True), ("penguin", "penguins", "bird", 2, False),
    ("ostrich", "ostriches", "bird", 2, False),
    ("salmon", "salmon", "fish", 0, False), ("shark", "sharks", "fish", 0, False),
    ("trout", "trout", "fish", 0, False), ("goldfish", "goldfish", "fish", 0, False),
    ("snake", "snakes", "reptile", 0, False), ("lizard", "lizards", "reptile", 4, False),
    ("turtle", "turtles", "reptile", 4, False), ("crocodile", "crocodiles", "reptile", 4, False),
    ("frog", "frogs", "amphibian", 4, False), ("toad", "toads", "amphibian", 4, False),
    ("ant", "ants", "insect", 6, False), ("bee", "bees", "insect", 6, True),
    ("butterfly", "butterflies", "insect", 6, True), ("mosquito", "mosquitoes", "insect", 6, True),
    ("moth", "moths", "insect", 6, True), ("spider", "spiders", "arachnid", 8, False),
    ("scorpion", "scorpions", "arachnid", 8, False),
)
#: (verb, past tense, -ing form, third person singular, regular)
VERBS = (
    ("walk", "walked", "walking", "walks", True), ("play", "played", "playing", "plays", True),
    ("jump", "jumped", "jumping", "jumps", True), ("cook", "cooked", "cooking", "cooks", True),
    ("clean", "cleaned", "cleaning", "cleans", True), ("open", "opened", "opening", "opens", True),
    ("watch", "watched", "watching", "watches", True), ("paint", "painted", "painting", "paints", True),
    ("call", "called", "calling", "calls", True), ("help", "helped", "helping", "helps", True),
    ("listen", "listened", "listening", "listens", True), ("visit", "visited", "visiting", "visits", True),
    ("climb", "climbed", "climbing", "climbs", True), ("dance", "danced", "dancing", "dances", True),
    ("smile", "smiled", "smiling", "smiles", True), ("move", "moved", "moving", "moves", True),
    ("carry", "carried", "carrying", "carries", True), ("study", "studied", "studying", "studies", True),
    ("try", "tried", "trying", "tries", True), ("stop", "stopped", "stopping", "stops", True),
    ("wash", "washed", "washing", "washes", True), ("laugh", "laughed", "laughing", "laughs", True),
    ("answer", "answered", "answering", "answers", True), ("start", "started", "starting", "starts", True),
    ("plant", "planted", "planting", "plants", True),
    ("go", "went", "going", "goes", False), ("eat", "ate", "eating", "eats", False),
    ("see", "saw", "seeing", "sees", False), ("run", "ran", "running", "runs", False),
    ("write", "wrote", "writing", "writes", False), ("sing", "sang", "singing", "sings", False),
    ("swim", "swam", "swimming", "swims", False), ("drink", "drank", "drinking", "drinks", False),
    ("take", "took", "taking", "takes", False), ("give", "gave", "giving", "gives", False),
    ("come", "came", "coming", "comes", False), ("make", "made", "making", "makes", False),
    ("buy", "bought", "buying", "buys", False), ("think", "thought", "thinking", "thinks", False),
    ("speak", "spoke", "speaking", "speaks", False), ("drive", "drove", "driving", "drives", False),
    ("sleep", "slept", "sleeping", "sleeps", False), ("fly", "flew", "flying", "flies", False),
    ("catch", "caught", "catching", "catches", False), ("teach", "taught", "teaching", "teaches", False),
    ("begin", "began", "beginning", "begins", False), ("build", "built", "building", "builds", False),
    ("sit", "sat", "sitting", "sits", False), ("know", "knew", "knowing", "knows", False),
    ("find", "found", "finding", "finds", False),
)
TOPICS = {
    "sports": ("match", "game", "race", "team", "coach"),
    "food": ("soup", "pizza", "cake", "salad", "bread"),
    "weather": ("weather", "sunshine", "storm", "breeze", "forecast"),
    "technology": ("phone", "laptop", "app", "website", "camera"),
    "music": ("concert", "song", "album", "band", "melody"),
}
POSITIVE_ADJECTIVES = ("great", "wonderful", "excellent", "lovely", "pleasant", "fantastic")
NEGATIVE_ADJECTIVES = ("terrible", "awful", "boring", "dreadful", "disappointing", "horrible")
SENTENCE_TEMPLATES = (
    "The {noun} {verb} {neg}{adj}.",
    "I think the {noun} {verb} {neg}{adj}.",
    "Everyone agreed that the {noun} {verb} {neg}{adj}.",
    "Honestly, the {noun} {verb} {neg}{adj}.",
)


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


@dataclass(frozen=True)
class Item:
    """One input of a family: its text and the facts every task of the family reads."""

    text: str
    facts: dict[str, Any]


@dataclass(frozen=True)
class Spec:
    """One task of a family: an instruction and how it answers an item."""

    name: str
    definition: str
    answer: Callable[[dict[str, Any]], str]
    classification: bool = False
    test: bool = False


@dataclass(frozen=True)
class Family:
    """Tasks sharing one input distribution and differing only by instruction."""

    name: str
    size: int
    items: Callable[[random.Random, int], list[Item]]
    tasks: tuple[Spec, ...]


def _generated(make: Callable[[random.Random], Item]) -> Callable[[random.Random, int], list[Item]]:
    """Items drawn with ``make`` until ``count`` distinct texts are found."""

    def items(rng: random.Random, count: int) -> list[Item]:
        found: dict[str, Item] = {}
        while len(found) < count:
            item = make(rng)
            found.setdefault(item.text, item)
        return list(found.values())

    return items


def _from_table(
    rows: Sequence[tuple[Any, ...]], text: Callable[[tuple[Any, ...]], str], keys: Sequence[str]
) -> Callable[[random.Random, int], list[Item]]:
    """Every row of a fact table, shuffled (``count`` is only checked)."""

    def items(rng: random.Random, count: int) -> list[Item]:
        if count > len(rows):
            raise ValueError(f"a table of {len(rows)} rows cannot give {count} items")
        shuffled = list(rows)
        rng.shuffle(shuffled)
        return [Item(text(row), dict(zip(keys, row))) for row in shuffled]

    return items


def _word_list(rng: random.Random) -> Item:
    words = rng.sample(NOUNS + VOWEL_NOUNS, rng.randint(3, 6))
    return Item(" ".join(words), {"words": words})


def _word(rng: random.Random) -> Item:
    word = rng.choice(VOWEL_NOUNS if rng.random() < 0.4 else NOUNS)
    return Item(word, {"word": word})


def _pair(rng: random.Random) -> Item:
    a, b = rng.sample(range(1, 60), 2)
    return Item(f"{a}, {b}", {"a": a, "b": b})


def _number_list(rng: random.Random) -> Item:
    numbers = [rng.randint(0, 9) for _ in range(rng.randint(4, 5))]
    if rng.random() < 0.4:
        numbers.sort()
    return Item(", ".join(map(str, numbers)), {"numbers": numbers})


def _date(rng: random.Random) -> Item:
    month, day = rng.randrange(12), rng.randint(1, 28)
    return Item(f"{MONTHS[month]} {day}", {"month": month, "day": day})


def _sentence(rng: random.Random) -> Item:
    topic = rng.choice(sorted(TOPICS))
    noun = rng.choice(TOPICS[topic])
    positive_word = rng.random() < 0.5
    adj = rng.choice(POSITIVE_ADJECTIVES if positive_word else NEGATIVE_ADJECTIVES)
    negated = rng.random() < 0.4
    text = rng.choice(SENTENCE_TEMPLATES).format(
        noun=noun, verb=rng.choice(("was", "is")), neg="not " if negated else "", adj=adj
    )
    facts = {"topic": topic, "noun": noun, "adj": adj, "negated": negated,
             "sentiment": "positive" if positive_word != negated else "negative"}
    return Item(text, facts)


def _sorted_words(words: Sequence[str]) -> str:
    return " ".join(sorted(words))


FAMILIES: tuple[Family, ...] = (
    Family("word_lists", 50, _generated(_word_list), (
        Spec("first_letter", "Return the first letter of the first word in the list.", lambda f: f["words"][0][0]),
        Spec("last_word", "Return the last word of the list.", lambda f: f["words"][-1]),
        Spec("count", "Count the words in the list. Answer with a number: 3, 4, 5 or 6.",
             lambda f: str(len(f["words"])), classification=True),
        Spec("uppercase", "Rewrite the list in uppercase letters.", lambda f: " ".join(f["words"]).upper()),
        Spec("reverse", "Write the words of the list in reverse order.", lambda f: " ".join(reversed(f["words"]))),
        Spec("sort", "Sort the words of the list in alphabetical order.", lambda f: _sorted_words(f["words"]), test=True),
    )),
    Family("words", 48, _generated(_word), (
        Spec("reverse_letters", "Spell the word backwards.", lambda f: f["word"][::-1]),
        Spec("count_letters", "How many letters does the word have? Answer with a number.", lambda f: str(len(f["word"]))),
        Spec("starts_with_vowel", "Does the word start with a vowel? Answer 'yes' or 'no'.",
             lambda f: _yes(f["word"][0] in "aeiou"), classification=True),
        Spec("capitalize", "Capitalize the first letter of the word.", lambda f: f["word"].capitalize()),
        Spec("last_letter", "Return the last letter of the word.", lambda f: f["word"][-1], test=True),
    )),
    Family("numbers", 56, _generated(_pair), (
        Spec("add", "Add the two numbers and give the sum.", lambda f: str(f["a"] + f["b"])),
        Spec("subtract", "Subtract the second number from the first number.", lambda f: str(f["a"] - f["b"])),
        Spec("maximum", "Return the larger of the two numbers.", lambda f: str(max(f["a"], f["b"]))),
        Spec("minimum", "Return the smaller of the two numbers.", lambda f: str(min(f["a"], f["b"]))),
        Spec("compare", "Is the first number larger than the second number? Answer 'yes' or 'no'.",
             lambda f: _yes(f["a"] > f["b"]), classification=True),
        Spec("parity", "Is the sum of the two numbers even or odd? Answer 'even' or 'odd'.",
             lambda f: "even" if (f["a"] + f["b"]) % 2 == 0 else "odd", classification=True, test=True),
    )),
    Family("number_lists", 52, _generated(_number_list), (
        Spec("sum", "Add up all the numbers in the list.", lambda f: str(sum(f["numbers"]))),
        Spec("largest", "Return the largest number in the list.", lambda f: str(max(f["numbers"]))),
        Spec("sort", "Sort the numbers from smallest to largest, separated by commas.",
             lambda f: ", ".join(map(str, sorted(f["numbers"])))),
        Spec("count_even", "How many numbers in the list are even? Answer with a number.",
             lambda f: str(sum(n % 2 == 0 for n in f["numbers"]))),
        Spec("is_sorted", "Are the numbers in increasing order? Answer 'yes' or 'no'.",
             lambda f: _yes(f["numbers"] == sorted(f["numbers"])), classification=True, test=True),
    )),
    Family("dates", 48, _generated(_date), (
        Spec("numeric", "Write the date in the numeric format MM/DD.", lambda f: f"{f['month'] + 1:02d}/{f['day']:02d}"),
        Spec("next_month", "Name the month that comes after the month of the date.", lambda f: MONTHS[(f["month"] + 1) % 12]),
        Spec("previous_month", "Name the month that comes before the month of the date.",
             lambda f: MONTHS[(f["month"] - 1) % 12], test=True),
        Spec("season", "In which season of the northern hemisphere is the date? Answer 'winter', 'spring', "
             "'summer' or 'autumn'.", lambda f: SEASONS[f["month"]], classification=True),
        Spec("day", "Return only the day number of the date.", lambda f: str(f["day"])),
    )),
    Family("sentences", 60, _generated(_sentence), (
        Spec("sentiment", "Classify the sentiment of the sentence as 'positive' or 'negative'.",
             lambda f: f["sentiment"], classification=True),
        Spec("topic", "Classify the topic of the sentence as 'sports', 'food', 'weather', 'technology' or 'music'.",
             lambda f: f["topic"], classification=True),
        Spec("negation", "Does the sentence contain a negation? Answer 'yes' or 'no'.",
             lambda f: _yes(f["negated"]), classification=True, test=True),
        Spec("subject", "Return the noun that the sentence is about.", lambda f: f["noun"]),
        Spec("adjective", "Return the adjective that describes the noun in the sentence.", lambda f: f["adj"], test=True),
    )),
    Family("countries", 49, _from_table(COUNTRIES, lambda r: r[0], ("country", "capital", "continent")), (
        Spec("capital", "What is the capital city of the country? Answer with the city name.", lambda f: f["capital"]),
        Spec("continent", "On which continent is the country? Answer 'Africa', 'Asia', 'Europe', 'North America', "
             "'South America' or 'Oceania'.", lambda f: f["continent"], classification=True),
        Spec("in_europe", "Is the country in Europe? Answer 'yes' or 'no'.",
             lambda f: _yes(f["continent"] == "Europe"), classification=True, test=True),
        Spec("first_letter", "Write the first letter of the country's name.", lambda f: f["country"][0]),
    )),
    Family("animals", 46, _from_table(ANIMALS, lambda r: r[0], ("animal", "plural", "kind", "legs", "flies")), (
        Spec("class", "Which class of animal is it? Answer 'mammal', 'bird', 'fish', 'reptile', 'amphibian', "
             "'insect' or 'arachnid'.", lambda f: f["kind"], classification=True),
        Spec("plural", "Write the plural form of the animal's name.", lambda f: f["plural"], test=True),
        Spec("legs", "How many legs does the animal have? Answer '0', '2', '4', '6' or '8'.",
             lambda f: str(f["legs"]), classification=True),
        Spec("can_fly", "Can the animal fly? Answer 'yes' or 'no'.", lambda f: _yes(f["flies"]), classification=True),
    )),
    Family("verbs", 42, _from_table(VERBS, lambda r: r[0], ("verb", "past", "ing", "third", "regular")), (
        Spec("past", "Write the past tense of the verb.", lambda f: f["past"]),
        Spec("ing", "Write the -ing form of the verb.", lambda f: f["ing"]),
        Spec("third_person", "Write the verb as it is used after 'she' in the present tense.", lambda f: f["third"], test=True),
        Spec("regular", "Is the verb regular or irregular? Answer 'regular' or 'irregular'.",
             lambda f: "regular" if f["regular"] else "irregular", classification=True),
    )),
)


def _demonstrations(spec: Spec, reserved: Sequence[Item]) -> tuple[Example, ...]:
    """Two positive examples with different outputs (two labels for classification)."""
    first = reserved[0]
    second = next((i for i in reserved[1:] if spec.answer(i.facts) != spec.answer(first.facts)), reserved[1])
    return tuple(Example(i.text, spec.answer(i.facts)) for i in (first, second))


def _negative(spec: Spec, family: Family, reserved: Sequence[Item]) -> Example:
    """The answer a sibling instruction gives on a reserved item where it is wrong here."""
    for sibling in (s for s in family.tasks if s is not spec):
        for item in reserved:
            wrong = sibling.answer(item.facts)
            if wrong != spec.answer(item.facts):
                return Example(item.text, wrong, f'This follows another instruction ("{sibling.definition}"), not this one.')
    raise AssertionError(f"no negative example for {family.name}_{spec.name}")  # the tables rule this out


def _family_tasks(family: Family) -> list[tuple[Task, bool]]:
    items = family.items(random.Random(f"activeit-builtin:{family.name}"), RESERVED + family.size)
    reserved, pool = items[:RESERVED], items[RESERVED : RESERVED + family.size]
    out = []
    for spec in family.tasks:
        name = f"{family.name}_{spec.name}"
        task = Task(
            name=name,
            definition=spec.definition,
            positive_examples=_demonstrations(spec, reserved),
            negative_examples=(_negative(spec, family, reserved),),
            instances=tuple(
                Instance(id=f"{name}-{k}", input=item.text, outputs=(spec.answer(item.facts),))
                for k, item in enumerate(pool)
            ),
            categories=(family.name,),
            domains=("builtin",),
            source="builtin",
            is_classification=spec.classification,
        )
        out.append((task, spec.test))
    return out


@lru_cache(maxsize=1)
def load_builtin() -> TaskPool:
    """The builtin suite as a pool with ``train`` and ``test`` splits (cached; immutable)."""
    tasks = [pair for family in FAMILIES for pair in _family_tasks(family)]
    return TaskPool(
        {
            "train": tuple(task for task, test in tasks if not test),
            "test": tuple(task for task, test in tasks if test),
        },
        name="builtin",
    )
