"""Deterministic synthetic grouped_chats exports of an electricity utility's customer care.

Same parameters and seed give the same bytes; used for the bundled demo, tests and load runs.
"""

from __future__ import annotations

import argparse
import base64
import json
import math
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, timezone
from random import Random
from typing import IO, Any, Literal

Record = dict[str, Any]
Sender = Literal["customer", "agent", "bot"]

DEFAULT_START = datetime(2025, 8, 1, tzinfo=UTC)
DEFAULT_SEED = 7
DEFAULT_DAYS = 30
DEFAULT_AGENTS = 36
AUTORESPONSE_MARKER = "*977#"
DEMO_SEED = 20250801
DEMO_CHATS = 60
DEMO_MAX_MESSAGES_PER_CHAT = 14
DEMO_INVALID_RECORDS = 3

# Customers are in East Africa; the export stores UTC but some pipelines write local offsets.
EAT = timezone(timedelta(hours=3), "EAT")
EMAIL_DOMAIN = "powercare.example"

# Relative chat volume by local hour: quiet at night, busy mornings and evenings.
_HOURLY_VOLUME = (1, 1, 0.5, 0.5, 0.5, 1, 3, 6, 9, 10, 10, 9, 8, 8, 8, 8, 8, 8, 9, 9, 8, 6, 4, 2)
_HOURLY_CUMULATIVE = [sum(_HOURLY_VOLUME[: hour + 1]) for hour in range(24)]


@dataclass(frozen=True, slots=True)
class _Topic:
    weight: float
    opens: tuple[str, ...]
    opens_sw: tuple[str, ...]
    details: tuple[str, ...]
    details_sw: tuple[str, ...]
    asks: tuple[str, ...]
    answers: tuple[str, ...]


TOPICS: dict[str, _Topic] = {
    "token": _Topic(
        0.26,
        (
            "I bought tokens worth {amount} but I have not received the token",
            "Hello, I paid for tokens via M-Pesa and no token has come",
            "Token not received since morning",
            "Hey it has said twice, failed",
            "I bought a token and when I enter it the meter says REJECT",
            "Why is it taking so long to get my token? Paid {amount} an hour ago",
            "Good morning. Please help, I bought tokens and the message never came",
        ),
        (
            "Nimenunua token ya {amount} lakini sijapokea",
            "Habari, token haijaingia kwenye mita",
            "Nimelipa kupitia M-Pesa lakini sijapokea token",
        ),
        (
            "Meter number {meter}",
            "The M-Pesa code is {mpesa}",
            "{mpesa} Confirmed. {amount} sent to POWER CARE for account {meter}",
            "I paid using my number {phone}",
            "It was {amount}, about 30 minutes ago",
        ),
        ("Nambari ya mita ni {meter}", "Code ya M-Pesa ni {mpesa}", "Nililipa {amount}"),
        (
            "Kindly share your meter number and the M-Pesa confirmation code.",
            "Please send the M-Pesa message you received so we can trace the token.",
        ),
        (
            "Your token is {token} for {units} units. Kindly enter it on your meter.",
            "Thank you for waiting. The purchase was delayed by a system hitch; your token "
            "is {token}.",
            "Please enter the token {token} and press enter. Let us know if it is accepted.",
            "The token was generated successfully: {token}. It may take a few minutes to load.",
        ),
    ),
    "outage": _Topic(
        0.18,
        (
            "No power in {area} since last night",
            "We have had a blackout for {hours} hours in {area}, what is happening?",
            "The whole estate is dark. The transformer blew at around 9pm",
            "Power keeps going on and off in {area}",
            "My neighbours have power but my house doesn't",
            "Hello, is there planned maintenance in {area} today?",
        ),
        (
            "Stima imepotea tangu jana usiku hapa {area}",
            "Hakuna stima {area} tangu asubuhi",
            "Stima inakatika kila saa, tafadhali mtusaidie",
        ),
        (
            "Location is {area}, near the stage",
            "Meter number {meter}",
            "It started around {hours}pm",
            "The whole street, not only my house",
        ),
        ("Tuko {area}, karibu na shule", "Mita ni {meter}", "Ni mtaa mzima"),
        (
            "Pole for the inconvenience. Kindly share your meter number and exact location.",
            "Sorry about that. Which area are you in, and is it only your house?",
        ),
        (
            "There is a fault affecting parts of {area}; our technicians are on site.",
            "We have logged the outage under reference {ref}. A team has been dispatched.",
            "Power has been restored in {area}. Kindly confirm if you are now supplied.",
            "There is planned maintenance in {area} until 5pm today. We apologise for the "
            "inconvenience.",
        ),
    ),
    "payment": _Topic(
        0.12,
        (
            "I paid my bill via M-Pesa but it is not reflecting",
            "I sent {amount} to the wrong account number, please help reverse",
            "Payment done yesterday, still not reflected on my account",
            "I was charged but did not receive any confirmation",
        ),
        (
            "Nimelipa bili kupitia M-Pesa lakini haijaonekana",
            "Pesa imekatwa lakini bili iko vile vile",
        ),
        (
            "Account number {account}",
            "M-Pesa code {mpesa}",
            "{mpesa} Confirmed. {amount} sent to POWER CARE for account {account}",
        ),
        ("Akaunti ni {account}", "Code ni {mpesa}"),
        (
            "Kindly share the M-Pesa confirmation message and your account number.",
            "Please share the transaction code so we can trace the payment.",
        ),
        (
            "The payment of {amount} has now been posted to account {account}.",
            "Payments can take up to 24 hours to reflect. Yours is now showing, thank you.",
            "We have raised a reversal request, reference {ref}. It takes 3 to 5 working days.",
        ),
    ),
    "billing": _Topic(
        0.10,
        (
            "My bill this month is {amount}, that is way too high",
            "Why am I being billed estimates? Nobody has read my meter for months",
            "I have not received my bill for July",
            "My bill doubled and I have not used more power than usual",
        ),
        ("Bili yangu iko juu sana mwezi huu", "Sijapokea bili ya mwezi huu"),
        (
            "Account number {account}",
            "The current reading is {reading}",
            "Last month it was {amount}",
        ),
        ("Akaunti ni {account}", "Reading ni {reading}"),
        (
            "Kindly share your account number and a photo of the current meter reading.",
            "Please confirm the account number so we can review the bill.",
        ),
        (
            "Your bill was based on an estimated reading. We have adjusted it to the actual "
            "reading; the new balance is {amount}.",
            "Your account {account} has a balance of {amount} due on the {due}.",
            "We have raised a bill review, reference {ref}. You will be contacted within 48 hours.",
        ),
    ),
    "meter": _Topic(
        0.10,
        (
            "My meter is showing 'Check' and beeping",
            "The meter display is blank",
            "The meter keeps beeping even after loading a token",
            "My meter says tamper, what does that mean?",
            "The meter reads low credit but I just loaded units",
        ),
        ("Mita yangu inalia bila kukoma", "Mita haionyeshi kitu", "Mita inasema tamper"),
        ("Meter number {meter}", "It started yesterday evening", "It shows {units} units left"),
        ("Mita ni {meter}", "Ilianza jana jioni"),
        (
            "Kindly share the meter number and a photo of the display.",
            "Please confirm the meter number and what the display shows.",
        ),
        (
            "Please key in the clear tamper token {token} and press enter.",
            "A technician will visit within 48 hours, reference {ref}.",
            "The meter needs a key change. Enter these two tokens in order: {token} then {token2}.",
        ),
    ),
    "connection": _Topic(
        0.07,
        (
            "I applied for a new connection 3 months ago and nobody has come",
            "How much is a new connection for a single phase in {area}?",
            "I paid the connection fee and I'm still waiting for the meter",
        ),
        ("Nimelipia connection mpya lakini hamjakuja", "Nataka kuunganishiwa stima {area}"),
        ("Application reference {ref}", "The plot is in {area}", "My number is {phone}"),
        ("Namba ya maombi ni {ref}",),
        (
            "Kindly share your application reference so we can check the status.",
            "Please share the plot location and your ID number.",
        ),
        (
            "Your application {ref} is at the survey stage; the team will contact you on {phone}.",
            "Your meter has been allocated. Installation is scheduled within 14 days.",
            "Kindly visit our {area} office with your ID and plot documents to apply.",
        ),
    ),
    "account": _Topic(
        0.05,
        (
            "I want to change the name on my account",
            "I forgot my account number",
            "How do I link my meter to my phone number {phone}?",
        ),
        ("Nimesahau nambari ya akaunti", "Nataka kubadilisha jina kwenye akaunti"),
        ("My ID is in the name of the previous owner", "The meter is {meter}"),
        ("Mita ni {meter}",),
        ("Kindly share the meter number or the name on the account.",),
        (
            "Your account number is {account}.",
            "Kindly visit any Power Care office with your ID and sale agreement to change the "
            "account name.",
        ),
    ),
    "refund": _Topic(
        0.04,
        (
            "I bought tokens for the wrong meter, I need a refund",
            "I was charged twice for the same token purchase",
        ),
        ("Nimekatwa pesa mara mbili", "Nilinunua token kwa mita isiyo yangu"),
        ("The wrong meter was {meter}", "Both codes are {mpesa} and {mpesa2}"),
        ("Code ni {mpesa}",),
        ("Kindly share both M-Pesa codes and the meter numbers involved.",),
        (
            "Refunds for wrong-meter purchases take 7 working days. Reference {ref}.",
            "We have confirmed the double charge and started a reversal of {amount}.",
        ),
    ),
    "complaint": _Topic(
        0.05,
        (
            "Your service is very poor, I have been waiting for a technician for a week",
            "Your staff at the {area} office were rude to me",
            "This is the third time I am reporting this issue",
            "Why do you keep cutting power every evening?",
        ),
        ("Huduma yenu ni mbaya sana", "Hii ni mara ya tatu nawaambia"),
        ("The reference you gave me was {ref}", "My meter is {meter}"),
        ("Mita ni {meter}",),
        ("We are sorry to hear that. Kindly share your meter number and the earlier reference.",),
        (
            "We sincerely apologise. Your complaint has been escalated, reference {ref}.",
            "Pole sana for the experience. A supervisor will call you on {phone}.",
        ),
    ),
    "enquiry": _Topic(
        0.03,
        (
            "What are your office hours?",
            "How many units do I get for {amount}?",
            "Where is your nearest office in {area}?",
            "Do you have a number I can call?",
        ),
        ("Ofisi yenu ya {area} iko wapi?", "Nikinunua {amount} napata units ngapi?"),
        ("I am in {area}",),
        ("Niko {area}",),
        ("Which area are you in?",),
        (
            "Our {area} office is open Monday to Friday, 8am to 5pm.",
            "{amount} buys about {units} units at the current tariff.",
        ),
    ),
}
_TOPIC_NAMES = tuple(TOPICS)
_TOPIC_CUMULATIVE = [
    sum(TOPICS[name].weight for name in _TOPIC_NAMES[: i + 1]) for i in range(len(_TOPIC_NAMES))
]
_USSD_TOPICS = frozenset({"token", "payment", "refund", "meter"})

CUSTOMER_QUOTES_USSD = (
    "I dialed *977# to check my token and it says no transaction found",
    "*977# is not working, it just says request failed",
    "I tried *977# like the message said and nothing came",
    "Nimepiga *977# mara mbili inasema failed",
)
AGENT_MENTIONS_USSD = (
    "You can view your last three tokens anytime by dialling *977# and choosing option 1.",
    "Kindly dial *977# and select 'My tokens' to retrieve the token.",
    "Next time the SMS delays, dial *977# to get the token directly.",
)
BOT_GREETINGS = (
    "Welcome to Power Care! To buy tokens dial *977# and follow the prompts. An agent will be "
    "with you shortly.",
    "Hello and thank you for contacting Power Care. For your last 3 tokens dial *977#. To "
    "report an outage reply with your meter number and location.",
    "Karibu Power Care! Nunua token kwa kupiga *977#. Tutakujibu hivi punde.",
)
BOT_HOLDING = (
    "Thank you for your message. All our agents are busy at the moment; we will respond as "
    "soon as possible.",
    "Our agents are available from 6am to 10pm. We will get back to you.",
    "Your message has been received. Reference number {ref}.",
)
BOT_SURVEY = "How did we do today? Reply 1 (poor) to 5 (excellent)."
CUSTOMER_FOLLOWUPS = (
    "Hello?",
    "Any update?",
    "Please help",
    "I am still waiting",
    "Are you there?",
    "??",
    "Hello Power Care",
    "🙏",
    "Ok",
    "Let me check",
)
CUSTOMER_FOLLOWUPS_SW = ("Nisaidieni tafadhali", "Mbona hamjibu?", "Sawa", "Niko hapa")
CUSTOMER_RETURNS = (
    "Hello again, the problem is back",
    "I'm back, nothing has changed since I last wrote",
    "Good morning, following up on my issue from the other day",
    "Hi, any progress? It has been days",
)
CUSTOMER_RETURNS_SW = ("Habari tena, bado tatizo liko", "Nimerudi, bado hakuna kitu")
CUSTOMER_THANKS = (
    "thank you, it worked",
    "It has worked now, thanks a lot",
    "Thanks 👍",
    "Power is back, thank you",
    "Received, thank you so much",
)
CUSTOMER_THANKS_SW = ("asante sana", "Asanteni, imefanya kazi", "Sawa asante")
CUSTOMER_UNHAPPY = (
    "still not working",
    "this is the third time I'm reporting this",
    "You keep saying that and nothing happens",
    "I'm very disappointed. I'll go to the office myself",
    "😡 still no power",
)
CUSTOMER_UNHAPPY_SW = ("Bado haifanyi kazi", "Hii ni mara ya tatu nawaambia")
AGENT_GREETINGS = (
    "Hello, thank you for contacting Power Care. My name is {agent}. How may I help you today?",
    "Hi, {agent} here. Sorry for the delay.",
    "Good day, you are chatting with {agent}.",
)
AGENT_FILLERS = (
    "We are checking, kindly hold.",
    "Thank you for your patience.",
    "Noted, we are following up.",
    "Let me confirm with the technical team.",
)
AGENT_NUDGES = (
    "Are you still there?",
    "Kindly share your meter number so we can assist.",
    "We have not heard from you. Kindly reply so we can assist.",
)
AGENT_CLOSINGS = (
    "You're welcome. Thank you for choosing Power Care.",
    "Glad we could help. Have a lovely day!",
    "Karibu! Thank you for contacting us.",
)
AGENT_ESCALATIONS = (
    "We are sorry for the inconvenience. We have escalated this to the technical team.",
    "Pole sana. A supervisor will follow up with you today.",
)

_FIRST_NAMES = (
    "Grace", "Brian", "Faith", "Kevin", "Mercy", "Dennis", "Esther", "Collins", "Joy", "Victor",
    "Naomi", "Felix", "Lilian", "Samuel", "Winnie", "Peter", "Ann", "James", "Caroline", "Eric",
    "Purity", "John", "Sharon", "Moses", "Irene", "Tom", "Beatrice", "Allan", "Diana", "Paul",
    "Rose", "Mark", "Agnes", "Ian", "Janet", "Hassan", "Amina", "Omar", "Zawadi", "Baraka",
)  # fmt: skip
_LAST_NAMES = (
    "Mwangi", "Otieno", "Kamau", "Wanjiku", "Odhiambo", "Njoroge", "Kiprono", "Achieng",
    "Mutua", "Wambui", "Cheruiyot", "Nyambura", "Ouma", "Kariuki", "Chebet", "Mohamed",
    "Wafula", "Auma", "Kipchoge", "Muthoni", "Omondi", "Njeri", "Barasa", "Juma",
)  # fmt: skip
_AREAS = (
    "Kisumu", "Nakuru", "Thika", "Eldoret", "Machakos", "Kitengela", "Ruiru", "Kakamega",
    "Nyeri", "Mombasa", "Embakasi", "Rongai", "Kiambu", "Kahawa West", "Syokimau", "Bungoma",
)  # fmt: skip
_AMOUNTS = (100, 150, 200, 250, 300, 500, 500, 1000, 1000, 1500, 2000, 2500, 3000, 5000)
_MONTH_DAYS = ("5th", "10th", "15th", "20th", "25th", "30th")
_BASE32 = "ABCDEFGHJKLMNPQRSTUVWXYZ23456789"


@dataclass(frozen=True, slots=True)
class Agent:
    name: str
    username: str | None
    email: str | None


@dataclass(slots=True)
class _Plan:
    topic: str
    handling: Literal["agent", "bot_only", "unanswered"]
    size: int
    ending: Literal["satisfied", "unsatisfied", "silent"]
    swahili: float
    greeting: bool
    quotes_ussd: bool
    agent_ussd: bool
    returns: bool
    resend: bool
    shuffled: bool
    time_style: int


@dataclass(slots=True)
class _Event:
    sender: Sender
    at: datetime
    text: str | None
    agent: Agent | None = None
    attachment: str | None = None


@dataclass(frozen=True, slots=True)
class ExportSummary:
    chats: int
    messages: int


class _Slots(dict[str, str]):
    """Template values made up on first use, so one chat keeps one meter, one account, ..."""

    def __init__(self, rng: Random) -> None:
        super().__init__()
        self._rng = rng
        self._amount = rng.choice(_AMOUNTS)

    def __missing__(self, key: str) -> str:
        rng = self._rng
        value: str
        if key == "amount":
            value = rng.choice(("KES {:,}", "Ksh {:,}", "{:,} bob", "{:,}")).format(self._amount)
        elif key == "units":
            value = f"{self._amount / rng.uniform(23.5, 28.0):.1f}"
        elif key == "meter":
            value = rng.choice(("371", "372", "142", "043")) + _digits(rng, 8)
        elif key in ("token", "token2"):
            value = " ".join(_digits(rng, 4) for _ in range(5))
        elif key in ("mpesa", "mpesa2"):
            value = "T" + "".join(rng.choice(_BASE32) for _ in range(9))
        elif key == "account":
            value = _digits(rng, rng.choice((7, 8, 9)))
        elif key == "area":
            value = rng.choice(_AREAS)
        elif key == "phone":
            value = "07" + _digits(rng, 8)
        elif key == "ref":
            value = rng.choice(("PC-", "INC", "REF")) + _digits(rng, 7)
        elif key == "hours":
            value = str(rng.randint(2, 11))
        elif key == "reading":
            value = f"{rng.randint(1000, 99999):05d}"
        elif key == "due":
            value = rng.choice(_MONTH_DAYS)
        else:
            raise KeyError(key)
        self[key] = value
        return value


def _digits(rng: Random, count: int) -> str:
    return f"{rng.randrange(10**count):0{count}d}"


class _Generator:
    """One export's worth of state: the agent roster, id counters and the random stream."""

    def __init__(
        self, *, seed: int, start: datetime, days: int, agents: int, demo: bool = False
    ) -> None:
        if days < 1:
            raise ValueError("days must be at least 1")
        if agents < 1:
            raise ValueError("agents must be at least 1")
        self.rng = Random(seed)
        self.start = start if start.tzinfo else start.replace(tzinfo=UTC)
        self.days = days
        self.demo = demo
        self.agents = self._roster(agents)
        # Busier agents first: real teams have a few people who take most chats.
        self._agent_cumulative: list[float] = []
        total = 0.0
        for rank in range(len(self.agents)):
            total += 1 / (1 + 0.12 * rank)
            self._agent_cumulative.append(total)
        # Chat ids are MongoDB ObjectIds: time, a per-export "machine" part, then a counter.
        self._machine = self.rng.getrandbits(40)
        self._counter = self.rng.getrandbits(24)
        self.chat_number = 0

    def _roster(self, count: int) -> list[Agent]:
        rng = self.rng
        roster: list[Agent] = []
        taken: set[str] = set()
        for _ in range(count):
            first, last = rng.choice(_FIRST_NAMES), rng.choice(_LAST_NAMES)
            username = rng.choice(
                (f"{first[0]}{last}", f"{first}.{last}", f"{first}{last[0]}")
            ).lower()
            email = f"{first}.{last}".lower()
            suffix = 1
            while username in taken or email in taken:
                suffix += 1
                username, email = f"{username.rstrip('0123456789')}{suffix}", f"{email}{suffix}"
            taken.update((username, email))
            kind = rng.random()
            roster.append(
                Agent(
                    name=first,
                    # Agents created through the email-only SSO flow never got a username.
                    username=None if kind < 0.15 else username,
                    email=None if 0.15 <= kind < 0.2 else f"{email}@{EMAIL_DOMAIN}",
                )
            )
        return roster

    def pick_agent(self, other_than: Agent | None = None) -> Agent:
        agent = self.rng.choices(self.agents, cum_weights=self._agent_cumulative)[0]
        if agent is other_than and len(self.agents) > 1:
            return self.pick_agent(other_than)
        return agent

    def chat_id(self, opened: datetime) -> str:
        self._counter = (self._counter + 1) & 0xFFFFFF
        seconds = int(opened.timestamp()) & 0xFFFFFFFF
        return f"{seconds:08x}{self._machine:010x}{self._counter:06x}"

    def post_id(self) -> str:
        raw = self.rng.getrandbits(240).to_bytes(30, "big")
        return "m_" + base64.urlsafe_b64encode(raw).decode()

    def opened_at(self) -> datetime:
        rng = self.rng
        day = rng.randrange(self.days)
        local_hour = _bisect(_HOURLY_CUMULATIVE, rng.random() * _HOURLY_CUMULATIVE[-1])
        utc_hour = (local_hour - 3) % 24
        return self.start + timedelta(
            days=day, hours=utc_hour, milliseconds=rng.randrange(3_600_000)
        )

    # -- planning -------------------------------------------------------------------------

    def plan(self, forced: dict[str, Any] | None = None) -> _Plan:
        rng = self.rng
        topic = _TOPIC_NAMES[_bisect(_TOPIC_CUMULATIVE, rng.random() * _TOPIC_CUMULATIVE[-1])]
        roll = rng.random()
        handling: Literal["agent", "bot_only", "unanswered"] = (
            "unanswered" if roll < 0.08 else "bot_only" if roll < 0.14 else "agent"
        )
        if handling == "agent":
            if rng.random() < 0.007:
                # A few marathon chats: disputes that run for weeks, hundreds of messages.
                size = min(100 + int(50 * (rng.paretovariate(1.5) - 1)), 900)
            else:
                size = max(3, round(rng.lognormvariate(math.log(5.5), 0.6)))
        else:
            size = rng.randint(1, 4)
        ending_roll = rng.random()
        ending: Literal["satisfied", "unsatisfied", "silent"] = (
            "satisfied" if ending_roll < 0.55 else "unsatisfied" if ending_roll < 0.8 else "silent"
        )
        language = rng.random()
        plan = _Plan(
            topic=topic,
            handling=handling,
            size=size,
            ending=ending,
            swahili=0.0 if language < 0.7 else 0.75 if language < 0.9 else 0.3,
            greeting=rng.random() < 0.65,
            quotes_ussd=topic in _USSD_TOPICS and rng.random() < 0.2,
            agent_ussd=topic in _USSD_TOPICS and rng.random() < 0.1,
            returns=size >= 5 and rng.random() < 0.12,
            resend=size >= 4 and rng.random() < 0.06,
            shuffled=size >= 3 and rng.random() < 0.05,
            time_style=_bisect([0.82, 0.93, 1.0], rng.random()),
        )
        for key, value in (forced or {}).items():
            setattr(plan, key, value)
        if plan.topic not in _USSD_TOPICS:
            plan.quotes_ussd = bool(forced and forced.get("quotes_ussd"))
            plan.agent_ussd = bool(forced and forced.get("agent_ussd"))
        if self.demo:
            plan.size = min(plan.size, DEMO_MAX_MESSAGES_PER_CHAT)
        return plan

    # -- conversation -------------------------------------------------------------------

    def chat(self, forced: dict[str, Any] | None = None) -> tuple[str, list[Record]]:
        plan = self.plan(forced)
        opened = self.opened_at()
        chat_id = self.chat_id(opened)
        self.chat_number += 1
        events = _Conversation(self, plan, opened).events()
        records = [self.record(chat_id, event, plan) for event in events]
        if plan.shuffled and len(records) >= 3:
            self._disorder(records)
        return chat_id, records

    def _disorder(self, records: list[Record]) -> None:
        rng = self.rng
        index = rng.randrange(1, len(records) - 1)
        if rng.random() < 0.5:
            records[index], records[index + 1] = records[index + 1], records[index]
        else:
            # A message delivered late by the platform lands at the end of the chat's array.
            records.append(records.pop(index))

    def record(self, chat_id: str, event: _Event, plan: _Plan) -> Record:
        rng = self.rng
        record: Record = {}
        if rng.random() >= 0.02:
            record["FB_CHAT_ID"] = chat_id
        record["MESSAGE_TYPE"] = "message"
        record["VIA"] = "fb_chat"
        record["PLATFORM"] = "facebook"
        record["MESSAGE_CONTENT"] = event.text
        record["DIRECTION"] = "to_company" if event.sender == "customer" else "to_client"
        missing_id = {"customer": 0.08, "agent": 0.65, "bot": 0.4}[event.sender]
        roll = rng.random()
        if roll >= 0.005:
            record["UNIQUE_POST_ID"] = None if roll < missing_id else self.post_id()
        style = plan.time_style if rng.random() >= 0.06 else rng.randrange(3)
        record["SOCIAL_CREATE_TIME"] = _format_time(event.at, style)
        if event.agent is not None:
            record["AGENT_USERNAME"] = event.agent.username
            record["AGENT_EMAIL"] = event.agent.email
        else:
            # Some export jobs write empty strings instead of nulls for "no agent".
            blank = "" if rng.random() < 0.04 else None
            record["AGENT_USERNAME"] = blank
            record["AGENT_EMAIL"] = blank
        if event.attachment is not None:
            record["ATTACHMENT_TYPE"] = event.attachment
        if rng.random() < 0.015:
            record[rng.choice(("PAGE_ID", "SENTIMENT", "LANGUAGE"))] = rng.choice(
                (None, "104882235611207", "neutral", "en")
            )
        return record


class _Conversation:
    """Writes one chat's events in time order from its plan."""

    def __init__(self, generator: _Generator, plan: _Plan, opened: datetime) -> None:
        self.g = generator
        self.rng = generator.rng
        self.plan = plan
        self.topic = TOPICS[plan.topic]
        self.slots = _Slots(self.rng)
        self.now = opened
        self.out: list[_Event] = []
        self.returned = False

    # -- primitives -------------------------------------------------------------------

    def wait(self, seconds: float) -> None:
        # At least a second apart, so records without a post id never hash alike on ingest.
        self.now += timedelta(milliseconds=max(1000, int(seconds * 1000)))

    def wait_for_shift(self) -> None:
        """Agents work 06:00-22:00 local; a night-time message waits for the morning shift."""
        local = self.now.astimezone(EAT)
        if 6 <= local.hour < 22:
            return
        opening = local.replace(hour=6, minute=0, second=0, microsecond=0)
        if local.hour >= 22:
            opening += timedelta(days=1)
        self.now = opening.astimezone(UTC) + timedelta(
            milliseconds=int(1000 * self.rng.lognormvariate(math.log(900), 0.8))
        )

    def fill(self, template: str, agent: Agent | None = None) -> str:
        if agent is not None:
            self.slots["agent"] = agent.name
        return template.format_map(self.slots)

    def say(self, sender: Sender, text: str | None, agent: Agent | None = None) -> None:
        self.out.append(_Event(sender, self.now, text, agent))

    def customer(self, english: tuple[str, ...], swahili: tuple[str, ...] = ()) -> None:
        rng = self.rng
        roll = rng.random()
        if roll < 0.04:
            self.out.append(_Event("customer", self.now, None, attachment="image"))
            return
        if roll < 0.055:
            self.out.append(_Event("customer", self.now, "", attachment="sticker"))
            return
        pool = swahili if swahili and rng.random() < self.plan.swahili else english
        self.say("customer", self.fill(rng.choice(pool)))

    def bot(self, text: str) -> None:
        self.say("bot", self.fill(text))

    def come_back(self) -> None:
        self.wait(3600 * self.rng.uniform(25, 96))
        self.returned = True
        self.customer(CUSTOMER_RETURNS, CUSTOMER_RETURNS_SW)

    # -- the chat ---------------------------------------------------------------------

    def events(self) -> list[_Event]:
        rng, plan = self.rng, self.plan
        if plan.quotes_ussd:
            self.say("customer", rng.choice(CUSTOMER_QUOTES_USSD))
        else:
            self.customer(self.topic.opens, self.topic.opens_sw)
        if plan.greeting:
            self.wait(rng.uniform(1, 3))
            self.bot(rng.choice(BOT_GREETINGS))
        if plan.handling == "unanswered":
            self._unanswered()
        elif plan.handling == "bot_only":
            self._bot_only()
        else:
            self._handled()
        return self.out

    def _unanswered(self) -> None:
        rng = self.rng
        while len(self.out) < self.plan.size:
            if self.plan.returns and not self.returned:
                self.come_back()
                continue
            self.wait(rng.lognormvariate(math.log(1800), 1.0))
            self.customer(CUSTOMER_FOLLOWUPS, CUSTOMER_FOLLOWUPS_SW)

    def _bot_only(self) -> None:
        rng = self.rng
        self.wait(rng.uniform(2, 8))
        self.bot(rng.choice(BOT_HOLDING))
        while len(self.out) < self.plan.size + 1:
            self.wait(rng.lognormvariate(math.log(900), 1.0))
            self.customer(CUSTOMER_FOLLOWUPS, CUSTOMER_FOLLOWUPS_SW)
            if rng.random() < 0.4:
                self.wait(rng.uniform(1, 4))
                self.bot(rng.choice(BOT_HOLDING))

    def _handled(self) -> None:
        rng, plan, topic = self.rng, self.plan, self.topic
        if rng.random() < 0.35:
            self.wait(rng.uniform(5, 90))
            self.customer(self.topic.details, self.topic.details_sw)
        agent = self.g.pick_agent()
        closing = {"satisfied": 2, "unsatisfied": 2, "silent": 0}[plan.ending]
        budget = max(plan.size - closing, len(self.out) + 1)
        turn = 0
        resent = mentioned_ussd = answered = False
        while len(self.out) < budget:
            self.wait(rng.lognormvariate(math.log(420 if turn == 0 else 240), 1.2))
            self.wait_for_shift()
            if turn > 0 and rng.random() < 0.04:
                agent = self.g.pick_agent(other_than=agent)  # shift change or transfer
            if turn == 0:
                template = rng.choice(AGENT_GREETINGS if rng.random() < 0.5 else topic.asks)
            elif plan.agent_ussd and not mentioned_ussd:
                template, mentioned_ussd = rng.choice(AGENT_MENTIONS_USSD), True
            else:
                template = rng.choice(
                    topic.answers if rng.random() < 0.45 else topic.asks + AGENT_FILLERS
                )
            text = self.fill(template, agent)
            self.say("agent", text, agent)
            answered = template in topic.answers or template in AGENT_MENTIONS_USSD
            if plan.resend and not resent and template not in AGENT_GREETINGS:
                # No reply, so the agent pastes the same message again hours later.
                resent = True
                self.wait(3600 * rng.uniform(2, 6))
                self.wait_for_shift()
                self.say("agent", text, agent)
            if rng.random() < 0.2:
                self.wait(rng.uniform(10, 60))
                template = rng.choice(AGENT_FILLERS + topic.answers)
                self.say("agent", self.fill(template, agent), agent)
                answered = answered or template in topic.answers
            if len(self.out) >= budget:
                break
            halfway_return = plan.returns and not self.returned and len(self.out) >= budget // 2
            # Marathon chats are disputes that drag on, so customers keep coming back for days.
            if halfway_return or (plan.size > 40 and rng.random() < 0.05):
                self.come_back()
            else:
                self.wait(rng.lognormvariate(math.log(90), 1.2))
                pool = topic.details if turn == 0 or rng.random() < 0.4 else CUSTOMER_FOLLOWUPS
                pool_sw = topic.details_sw if pool is topic.details else CUSTOMER_FOLLOWUPS_SW
                self.customer(pool, pool_sw)
            for _ in range(rng.choices((0, 1, 2), (0.6, 0.28, 0.12))[0]):
                self.wait(rng.uniform(4, 60))
                self.customer(CUSTOMER_FOLLOWUPS + topic.details, CUSTOMER_FOLLOWUPS_SW)
            turn += 1
        self._ending(agent, answered)

    def _ending(self, agent: Agent, answered: bool) -> None:
        rng, plan = self.rng, self.plan
        if plan.returns and not self.returned:
            self.come_back()
        if plan.ending == "satisfied":
            if not answered:
                # Nobody thanks an agent who only asked questions: the fix comes first.
                self.wait(rng.lognormvariate(math.log(240), 1.2))
                self.wait_for_shift()
                self.say("agent", self.fill(rng.choice(self.topic.answers), agent), agent)
            self.wait(rng.lognormvariate(math.log(300), 1.2))
            self.customer(CUSTOMER_THANKS, CUSTOMER_THANKS_SW)
            if rng.random() < 0.6:
                self.wait(rng.lognormvariate(math.log(120), 1.0))
                self.wait_for_shift()
                self.say("agent", self.fill(rng.choice(AGENT_CLOSINGS), agent), agent)
            if rng.random() < 0.15:
                self.wait(rng.uniform(1, 5))
                self.bot(BOT_SURVEY)
        elif plan.ending == "unsatisfied":
            self.wait(rng.lognormvariate(math.log(600), 1.3))
            self.customer(CUSTOMER_UNHAPPY, CUSTOMER_UNHAPPY_SW)
            if rng.random() < 0.5:
                self.wait(rng.lognormvariate(math.log(300), 1.2))
                self.wait_for_shift()
                self.say("agent", self.fill(rng.choice(AGENT_ESCALATIONS), agent), agent)
        elif rng.random() < 0.4:
            self.wait(3600 * rng.uniform(0.5, 3))
            self.wait_for_shift()
            self.say("agent", self.fill(rng.choice(AGENT_NUDGES), agent), agent)


def _bisect(cumulative: list[float], value: float) -> int:
    for index, bound in enumerate(cumulative):
        if value < bound:
            return index
    return len(cumulative) - 1


def _format_time(moment: datetime, style: int) -> str:
    if style == 0:
        return f"{moment:%Y-%m-%dT%H:%M:%S}.{moment.microsecond // 1000:03d}Z"
    if style == 1:
        return moment.astimezone(EAT).isoformat(timespec="seconds")
    # Naive text from older exports; ingest reads it as UTC, so it is written in UTC.
    return f"{moment:%Y-%m-%d %H:%M:%S}"


# -- public API -------------------------------------------------------------------------


def iter_export(
    *,
    chats: int | None = None,
    messages: int | None = None,
    seed: int = DEFAULT_SEED,
    start: datetime = DEFAULT_START,
    days: int = DEFAULT_DAYS,
    agents: int = DEFAULT_AGENTS,
) -> Iterator[tuple[str, list[Record]]]:
    """Yield (chat id, records) one chat at a time.

    Give exactly one of `chats` (that many chats) or `messages` (chats until at least that
    many records; the last chat may overshoot by its own size). Bad arguments raise
    ValueError here, before anything is generated or a file is opened.
    """
    if (chats is None) == (messages is None):
        raise ValueError("give exactly one of chats or messages")
    limit = chats if chats is not None else messages
    assert limit is not None
    if limit < 0:
        raise ValueError("chats and messages must not be negative")
    generator = _Generator(seed=seed, start=start, days=days, agents=agents)
    return _chats(generator, limit, count_messages=messages is not None)


def _chats(
    generator: _Generator, limit: int, *, count_messages: bool
) -> Iterator[tuple[str, list[Record]]]:
    produced = 0
    while (produced if count_messages else generator.chat_number) < limit:
        chat_id, records = generator.chat()
        produced += len(records)
        yield chat_id, records


def iter_demo() -> Iterator[tuple[str, list[Record]]]:
    """The bundled demo: every quirk of real exports, and a few records ingest must reject."""
    generator = _Generator(
        seed=DEMO_SEED, start=DEFAULT_START, days=DEFAULT_DAYS, agents=DEFAULT_AGENTS, demo=True
    )
    # Rates alone could leave a small file without some quirk; these chats guarantee each one.
    forced: dict[int, dict[str, Any]] = {
        2: {"handling": "agent", "topic": "token", "greeting": True, "quotes_ussd": True},
        9: {"handling": "agent", "topic": "token", "agent_ussd": True, "size": 8},
        15: {"handling": "agent", "topic": "outage", "returns": True, "size": 12},
        23: {"handling": "agent", "shuffled": True, "size": 9},
        31: {"handling": "agent", "resend": True, "size": 10},
        38: {"handling": "unanswered", "greeting": True, "size": 3},
        46: {"handling": "bot_only", "greeting": True, "size": 3},
        53: {"handling": "agent", "swahili": 1.0, "ending": "satisfied", "size": 6},
        58: {"handling": "agent", "time_style": 2, "size": 7},
    }
    corrupt_at = {19: _unknown_direction, 41: _unparseable_time, 55: _missing_time}
    assert len(corrupt_at) == DEMO_INVALID_RECORDS
    for number in range(DEMO_CHATS):
        chat_id, records = generator.chat(forced.get(number))
        corrupt = corrupt_at.get(number)
        if corrupt is not None:
            position = generator.rng.randrange(1, len(records) + 1)
            records.insert(position, corrupt(dict(records[position - 1])))
        yield chat_id, records


def _unknown_direction(record: Record) -> Record:
    record["DIRECTION"] = "to_page"
    record["UNIQUE_POST_ID"] = None
    return record


def _unparseable_time(record: Record) -> Record:
    record["SOCIAL_CREATE_TIME"] = "12/08/2025 2:03 PM"
    record["UNIQUE_POST_ID"] = None
    return record


def _missing_time(record: Record) -> Record:
    del record["SOCIAL_CREATE_TIME"]
    record["UNIQUE_POST_ID"] = None
    return record


def generate_export(
    *,
    chats: int,
    seed: int = DEFAULT_SEED,
    start: datetime = DEFAULT_START,
    days: int = DEFAULT_DAYS,
    agents: int = DEFAULT_AGENTS,
) -> dict[str, list[Record]]:
    """A whole export in memory; for large files use write_export."""
    return dict(iter_export(chats=chats, seed=seed, start=start, days=days, agents=agents))


def demo_export() -> dict[str, list[Record]]:
    return dict(iter_demo())


def write_export(
    target: str | os.PathLike[str] | IO[bytes],
    *,
    chats: int | None = None,
    messages: int | None = None,
    seed: int = DEFAULT_SEED,
    start: datetime = DEFAULT_START,
    days: int = DEFAULT_DAYS,
    agents: int = DEFAULT_AGENTS,
    demo: bool = False,
) -> ExportSummary:
    """Write an export as UTF-8 JSON, one chat at a time, to a path or a binary file."""
    if demo:
        if chats is not None or messages is not None:
            raise ValueError("the demo export has a fixed size; do not give chats or messages")
        source = iter_demo()
    else:
        source = iter_export(
            chats=chats, messages=messages, seed=seed, start=start, days=days, agents=agents
        )
    if isinstance(target, (str, os.PathLike)):
        with open(target, "wb") as stream:
            return _write(stream, source)
    return _write(target, source)


def _write(stream: IO[bytes], source: Iterator[tuple[str, list[Record]]]) -> ExportSummary:
    chat_count = message_count = 0
    stream.write(b"{")
    for chat_id, records in source:
        # One record per line keeps the demo file reviewable in a diff.
        lines = ",\n".join(
            json.dumps(record, ensure_ascii=False, separators=(",", ":")) for record in records
        )
        separator = "\n" if chat_count == 0 else ",\n"
        stream.write(f"{separator}{json.dumps(chat_id)}:[\n{lines}\n]".encode())
        chat_count += 1
        message_count += len(records)
    stream.write(b"\n}\n")
    return ExportSummary(chats=chat_count, messages=message_count)


def _date(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m powerpulse.synthetic",
        description="Write a synthetic grouped_chats export (deterministic by seed).",
    )
    size = parser.add_mutually_exclusive_group(required=True)
    size.add_argument("--chats", type=int, help="number of chats")
    size.add_argument("--messages", type=int, help="approximate number of message records")
    size.add_argument("--demo", action="store_true", help="the bundled demo export")
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    parser.add_argument(
        "--start", type=_date, default=DEFAULT_START, help="first day, ISO 8601 (UTC if naive)"
    )
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS)
    parser.add_argument("--agents", type=int, default=DEFAULT_AGENTS)
    parser.add_argument("-o", "--output", required=True, help="output file, or - for stdout")
    args = parser.parse_args(argv)
    if (args.chats is not None and args.chats < 0) or (
        args.messages is not None and args.messages < 0
    ):
        parser.error("sizes must not be negative")
    options: dict[str, Any] = (
        {"demo": True}
        if args.demo
        else {
            "chats": args.chats,
            "messages": args.messages,
            "seed": args.seed,
            "start": args.start,
            "days": args.days,
            "agents": args.agents,
        }
    )
    try:
        if args.output == "-":
            summary = write_export(sys.stdout.buffer, **options)
            sys.stdout.buffer.flush()
        else:
            summary = write_export(args.output, **options)
    except ValueError as exc:
        parser.error(str(exc))
    print(
        f"wrote {summary.messages:,} messages in {summary.chats:,} chats to {args.output}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
