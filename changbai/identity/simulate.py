"""Chinese-style registration records with known truth: residents, and the slips each facility makes.

Used to train the shipped model's starting parameters, in tests, and by benchmarks/empi.py until (and
beside) the synthetic province. Errors follow what registration desks get wrong: traditional characters,
homophones (张/章), near-homophones (刘/牛, 陈/程), look-alike characters, names keyed in pinyin in either
order, 15-digit old IDs, mistyped ID digits, swapped month/day, new phone numbers, moved addresses. Hard
non-matches are made on purpose: twins, and family members sharing a phone and an address.
"""

from __future__ import annotations

import random
from collections import defaultdict
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache
from typing import Any

from opencc import OpenCC
from pypinyin import Style, lazy_pinyin

from changbai.identity.chinese import fuzzy_syllable
from changbai.identity.divisions import divisions
from changbai.identity.names import surname_readings
from changbai.identity.residentid import check_character

SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何林高罗郑梁谢宋唐韩曹许邓冯彭曾肖田董潘袁蔡蒋余于杜叶程魏苏吕丁任卢"
    "姚沈钟姜崔谭陆范汪廖石金韦贾夏付方邹熊白孟秦邱侯江尹薛闫段雷龙黎史陶贺毛郝顾龚邵万覃武钱戴严欧莫孔向常汤康易乔赖文"
)
KOREAN_SURNAMES = "朴金李崔郑姜赵尹张林韩"
GIVEN = (
    "伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红娥建国文辉力鹏飞宇浩然子涵欣怡梓轩"
    "思雨佳琪晨阳博文俊熙雅婷家豪志强海燕淑珍春梅丹丹凤霞立新永刚宏伟德胜金凤玉珍晓东丽娟秀英"
    "成龙海波雪梅国华建军春生秋菊冬梅学良振华永红桂兰宝山铁柱长青松林春花明哲成哲英浩"
)
MINORITY_NAMES = ["阿卜杜拉·买买提", "古丽·艾山", "努尔·艾力", "扎西·多吉", "巴特尔", "其木格", "乌兰·图雅"]
STREETS = ["光明", "解放", "人民", "建设", "新华", "胜利", "和平", "友谊", "长白", "延河"]
_T2S_REVERSE = OpenCC("s2t")


@dataclass
class Person:
    pid: str
    surname: str
    given: str
    sex: str
    birth: date
    county: str
    township: str | None
    street: str
    phone: str
    id18: str

    @property
    def name(self) -> str:
        return self.surname + self.given if "·" not in self.given else self.given


@lru_cache(maxsize=1)
def _homophones() -> dict[str, list[str]]:
    by_sound: dict[str, list[str]] = defaultdict(list)
    for ch in set(GIVEN + SURNAMES):
        by_sound[lazy_pinyin(ch, style=Style.NORMAL)[0]].append(ch)
    return {
        ch: [o for o in by_sound[lazy_pinyin(ch, style=Style.NORMAL)[0]] if o != ch] for ch in set(GIVEN + SURNAMES)
    }


@lru_cache(maxsize=1)
def _near_homophones() -> dict[str, list[str]]:
    by_fuzzy: dict[str, list[str]] = defaultdict(list)
    for ch in set(GIVEN + SURNAMES):
        by_fuzzy[fuzzy_syllable(lazy_pinyin(ch, style=Style.NORMAL)[0])].append(ch)
    out = {}
    for ch in set(GIVEN + SURNAMES):
        key = fuzzy_syllable(lazy_pinyin(ch, style=Style.NORMAL)[0])
        out[ch] = [o for o in by_fuzzy[key] if o != ch]
    return out


@lru_cache(maxsize=1)
def _jilin_places() -> list[tuple[str, list[str]]]:
    table = divisions()
    counties = [d.code for d in table.by_code.values() if d.level == "county" and d.code.startswith("22")]
    towns: dict[str, list[str]] = defaultdict(list)
    for d in table.by_code.values():
        if d.level == "township":
            towns[d.parent].append(d.code)
    return [(c, towns.get(c, [])) for c in sorted(counties)]


def make_person(rng: random.Random, pid: str) -> Person:
    county, towns = rng.choice(_jilin_places())
    yanbian = county.startswith("2224")
    if rng.random() < 0.02:
        surname, given = "", rng.choice(MINORITY_NAMES)
    else:
        surname = rng.choice(KOREAN_SURNAMES if yanbian and rng.random() < 0.4 else SURNAMES)
        given = "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2, 2, 2))))
    sex = rng.choice(("male", "female"))
    birth = date(1930, 1, 1) + timedelta(days=rng.randrange(0, 365 * 94))
    seq = rng.randrange(0, 100) * 10 + rng.choice((1, 3, 5, 7, 9) if sex == "male" else (0, 2, 4, 6, 8))
    first17 = f"{county}{birth:%Y%m%d}{seq:03d}"
    return Person(
        pid=pid,
        surname=surname,
        given=given,
        sex=sex,
        birth=birth,
        county=county,
        township=rng.choice(towns) if towns else None,
        street=f"{rng.choice(STREETS)}路{rng.randint(1, 300)}号",
        phone="1" + rng.choice("3456789") + "".join(str(rng.randrange(10)) for _ in range(9)),
        id18=first17 + check_character(first17),
    )


def relative(rng: random.Random, p: Person, pid: str, twin: bool) -> Person:
    """A twin (same birth, surname, address) or a family member (same phone and address)."""
    other = make_person(rng, pid)
    other.surname, other.county, other.township, other.street = p.surname, p.county, p.township, p.street
    if not p.surname:
        other.given = rng.choice(MINORITY_NAMES)
    if twin:
        other.birth = p.birth
        if p.given and len(p.given) == 2 and rng.random() < 0.7:
            other.given = p.given[0] + rng.choice(GIVEN)  # twins often share the first given character
        seq = int(p.id18[14:17]) + rng.choice((1, 2, 3))
        first17 = f"{p.id18[:14]}{seq % 1000:03d}"
        other.id18 = first17 + check_character(first17)
        other.sex = "male" if seq % 2 else "female"
    else:
        other.phone = p.phone
    return other


def _name_variant(rng: random.Random, p: Person) -> dict[str, Any] | None:
    r = rng.random()
    name = p.name
    if r < 0.03:
        return None
    if r < 0.10:
        name = _T2S_REVERSE.convert(name)
    elif r < 0.17 and p.surname:
        name = _replace_one(rng, name, _homophones())
    elif r < 0.22 and p.surname:
        name = _replace_one(rng, name, _near_homophones())
    elif r < 0.27 and p.surname:
        sur = " ".join(surname_readings().get(p.surname, lazy_pinyin(p.surname)))
        sur = "".join(ch for ch in sur if not ch.isdigit()).replace(" ", "")
        given = "".join(lazy_pinyin(p.given))
        text = rng.choice([f"{sur} {given}".upper(), f"{given.title()} {sur.title()}", f"{sur.title()} {given}"])
        return {"text": text}
    elif r < 0.29 and len(name) > 2:
        i = rng.randrange(1, len(name))
        name = name[:i] + rng.choice(GIVEN) + name[i + 1 :]  # a real typo: a different character
    if "·" in name or not p.surname:
        return {"text": name}
    return {"use": "official", "family": name[: len(p.surname)], "given": [name[len(p.surname) :]]}


def _replace_one(rng: random.Random, name: str, table: dict[str, list[str]]) -> str:
    spots = [i for i, ch in enumerate(name) if table.get(ch)]
    if not spots:
        return name
    i = rng.choice(spots)
    return name[:i] + rng.choice(table[name[i]]) + name[i + 1 :]


def record(rng: random.Random, p: Person, rid: str, facility: str) -> dict[str, Any]:
    """One facility's Patient for person ``p``, with that facility's slips."""
    patient: dict[str, Any] = {"resourceType": "Patient", "id": rid}
    idents = [{"system": f"urn:changbai:mrn:{facility}", "value": rid}]
    r = rng.random()
    if r < 0.55:
        number = p.id18
        if p.birth.year < 1985 and rng.random() < 0.15:
            number = p.id18[:6] + p.id18[8:17]  # the old 15-digit card
        elif rng.random() < 0.04:
            i = rng.randrange(0, 17)
            number = number[:i] + str((int(number[i]) + rng.randint(1, 9)) % 10) + number[i + 1 :]
        idents.append({"system": "urn:oid:2.16.156.10011.1.3", "value": number})
    patient["identifier"] = idents
    name = _name_variant(rng, p)
    if name:
        patient["name"] = [name]
    if rng.random() < 0.97:
        patient["gender"] = p.sex
    r = rng.random()
    if r < 0.92:
        birth = f"{p.birth:%Y-%m-%d}"
        if r < 0.02 and p.birth.day <= 12:
            birth = f"{p.birth:%Y}-{p.birth.day:02d}-{p.birth.month:02d}"
        elif r < 0.04:
            d = p.birth + timedelta(days=rng.choice((-1, 1, 10, -10, 365)))
            birth = f"{d:%Y-%m-%d}"
        patient["birthDate"] = birth
    if rng.random() < 0.7:
        phone = p.phone
        if rng.random() < 0.1:
            phone = "1" + rng.choice("3456789") + "".join(str(rng.randrange(10)) for _ in range(9))
        fmt = rng.choice((phone, f"+86 {phone[:3]} {phone[3:7]} {phone[7:]}", f"{phone[:3]}-{phone[3:7]}-{phone[7:]}"))
        patient["telecom"] = [{"system": "phone", "value": fmt, "use": "mobile"}]
    if rng.random() < 0.8:
        table = divisions()
        chain = {d.level: d.name for d in table.ancestors(p.township or p.county)}
        if rng.random() < 0.1:
            county, towns = rng.choice(_jilin_places())  # moved
            chain = {d.level: d.name for d in table.ancestors(rng.choice(towns) if towns else county)}
        line = (chain.get("township", "") + p.street) if rng.random() < 0.8 else p.street
        addr = {"use": "home", "line": [line], "district": chain.get("county")}
        if rng.random() < 0.6:
            addr["city"] = chain.get("city")
            addr["state"] = chain.get("province")
        patient["address"] = [{k: v for k, v in addr.items() if v}]
    return patient


def population(
    n_people: int, seed: int = 7, dup_rate: float = 0.5, relatives: float = 0.1
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Patients of ``n_people`` residents (some with relatives) and the truth: record id -> person id."""
    rng = random.Random(seed)
    people: list[Person] = []
    for i in range(n_people):
        p = make_person(rng, f"P{i}")
        people.append(p)
        if rng.random() < relatives:
            people.append(relative(rng, p, f"P{i}r", twin=rng.random() < 0.4))
    records, truth = [], {}
    for p in people:
        copies = 1
        while rng.random() < dup_rate and copies < 5:
            copies += 1
        for c in range(copies):
            rid = f"{p.pid}-{c}"
            records.append(record(rng, p, rid, f"F{rng.randrange(40)}"))
            truth[rid] = p.pid
    rng.shuffle(records)
    return records, truth
