"""The offline analyzer: VADER sentiment, keyword topics and fixed rules; no key, no network.

``LexiconAnalyzer`` judges a conversation from its transcript lines alone and always gives the
same judgement for the same input. It costs nothing and reports zero tokens. The rules:

Messages. *Customer texts* are CUSTOMER lines with non-blank content (attachments are
skipped). A *reply* is an AGENT or BOT line after the first customer line. Text is matched
case-insensitively on whole words and phrases.

Sentiment. Each customer text gets a VADER compound score c in [-1, 1], using VADER's lexicon
plus a small built-in Swahili one (asante, safi, nzuri ... positive; tatizo, shida, bado,
mbaya, hakuna ... negative; "hakuna shida"/"hakuna tatizo" read as "all good"). c maps to
1-5: c <= -0.5 → 1, c <= -0.05 → 2, c < 0.05 → 3, c < 0.5 → 4, else 5.
``sentiment_score`` maps the mean over all customer texts, ``initial_sentiment`` the first
customer text, ``final_sentiment`` the last. No customer text → 3 for all three.

Resolution, first rule that applies:
1. no customer text → not resolved; 2. no reply at all → not resolved;
3. the *closing window* is the last 3 customer texts sent after the first AGENT reply (in
   bot-only chats, after the first BOT reply); cues in the opening request describe the
   problem, not its outcome. Read newest first, the first text with a cue decides: a negative
   cue ("still", "again", "not working", "not received", "didn't work", "third time",
   "useless", "no power", "bado", "haijafika", "sijapata" ...) → not resolved, else a
   positive cue ("thank", "thanks", "asante", "it worked", "working now", "received",
   "restored", "sorted", "resolved", "got it", "imefika", "nimepokea" ...) → resolved.
   A text with both counts as negative;
4. no cue and the chat ends with a customer line → not resolved (left unanswered);
5. no cue and the chat ends with replies: resolved if one of those AGENT replies reports a
   fix or closes ("restored", "refunded", "here is your token", "anything else", "have a nice
   day" ...; "will be restored" does not count), or if the customer's last text was a
   question ("?" or a leading question word) and one of those replies is not itself a
   question; otherwise not resolved.

``satisfaction_score``: no customer text → 3; otherwise 4 if resolved else 2, then +1 if
final_sentiment >= 4 and -1 if final_sentiment <= 2 (resolved 3-5, not resolved 1-3).

``effort_score``: 5, minus 1 for each that holds, never below 1: (a) a customer text of 10+
characters repeats one of the 20 before it: identical after dropping case and punctuation,
or, both having 3+ words, with a word-set Jaccard similarity of at least 0.8; (b) 3+
customer texts before the first AGENT reply (or no AGENT reply at all); (c)
``contact_count`` > 1; (d) the chat ends with 2+ unanswered customer texts and is not
resolved; (e) a customer text chases: "hello?", "anyone", "are you there", "third time",
"again" (not "thanks again"), "still waiting", "any update", "mbona", "mara ya tatu" ...

Topics: the topics file (``data/topics.json`` by default) maps each topic to keywords.
Keywords and text are compared as sequences of whole words (runs of letters and digits,
case ignored, punctuation skipped: "m-pesa" matches "M-Pesa" and "m pesa", "*977#" matches
"977"). A topic's hits are the occurrences of all its keywords ("buy token" also counts as
"token") in the customer texts, or in all texts if none of the customer's hit. Up to 3 topics
with the most hits are kept, ties in file order; no hit → "enquiry". Labels pass through
``normalise_topic``.

Language: "sw" if at least 25% of the customer's words are Swahili marker words (na, ya,
kwa, ni, sana, asante, habari, umeme, tafadhali, bado, hakuna ...) or start with a Swahili
verb prefix (nime-, sija-, haija-, tume-, hatuja-); otherwise "en".

Summary: one sentence built from the above, e.g. "Customer wrote in Swahili about token
purchase; an agent replied after 12 min; 3 messages; resolved: the customer confirmed."

The fingerprint's model names the VADER version and the first 12 hex digits of the topics
file's SHA-256; ``LEXICON_VERSION`` changes whenever these rules or the Swahili lists change.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from importlib import metadata, resources
from pathlib import Path
from typing import Any

from vaderSentiment.vaderSentiment import SentimentIntensityAnalyzer

from ..errors import ConfigurationError
from .base import AnalysisOutcome, AnalyzerFingerprint, ConversationInput, TranscriptLine
from .schema import ConversationJudgement, normalise_topic

LEXICON_VERSION = "lexicon-1"
ANALYZER_NAME = "lexicon"
DEFAULT_TOPIC = "enquiry"
MAX_TOPICS = 3
CLOSING_WINDOW = 3
SWAHILI_SHARE = 0.25
REPEAT_LOOKBACK = 20
# Batches up to this size are judged on the event loop (a few milliseconds); larger ones in
# a worker thread so the loop stays responsive.
INLINE_BATCH = 16

CUSTOMER = "CUSTOMER"
AGENT = "AGENT"
BOT = "BOT"


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Added to VADER's lexicon (valence -4 .. +4, VADER's own scale).
SWAHILI_LEXICON: dict[str, float] = {
    "asante": 2.0,
    "ahsante": 2.0,
    "asanteni": 2.0,
    "shukran": 2.0,
    "shukrani": 2.0,
    "sawa": 1.0,
    "safi": 1.8,
    "nzuri": 1.9,
    "vizuri": 1.9,
    "poa": 1.5,
    "fiti": 1.5,
    "bora": 1.5,
    "furaha": 2.2,
    "hongera": 2.5,
    "karibu": 1.2,
    "barikiwa": 2.0,
    "ubarikiwe": 2.0,
    "mbarikiwe": 2.0,
    "tatizo": -1.7,
    "matatizo": -1.7,
    "shida": -1.5,
    "bado": -0.8,
    "hakuna": -0.8,
    "hamna": -0.8,
    "giza": -1.0,
    "hasira": -2.3,
    "nimekasirika": -2.3,
    "mbaya": -2.5,
    "vibaya": -2.2,
    "sijapata": -1.2,
    "sijapokea": -1.2,
    "haijafika": -1.2,
    "hazijafika": -1.2,
    "haijarudi": -1.2,
    "haifanyi": -1.2,
    "imekatika": -1.2,
    "umekatika": -1.2,
    "kero": -2.0,
    "usumbufu": -1.8,
    "ovyo": -2.0,
    "hovyo": -2.0,
    "wezi": -2.5,
    "mwizi": -2.5,
    "uongo": -2.0,
    "waongo": -2.5,
    "tapeli": -2.5,
    "matapeli": -2.5,
    "aibu": -2.0,
    "nimechoka": -2.0,
    "hasara": -1.8,
    "ghali": -1.2,
    "kuchelewa": -1.2,
    "mmechelewa": -1.5,
}

# Swahili idioms VADER would misread word by word, rewritten before scoring.
_SWAHILI_IDIOMS = {
    "hakuna shida": "all good",
    "hakuna tatizo": "all good",
    "hakuna matata": "all good",
    "si mbaya": "not bad",
    "sio mbaya": "not bad",
    "siyo mbaya": "not bad",
}

SWAHILI_MARKERS = _word_set(
    """
    na ya wa za la kwa ni sana asante ahsante habari tafadhali naomba umeme stima bado hii
    hiyo hizi hakuna hamna sijapata sijapokea haijafika nini gani lini wapi vipi je mimi
    wewe yangu yako yetu lakini kama kwamba mpaka sasa leo jana kesho tena pia sawa ndio
    ndiyo hapana mbona tokeni mita malipo nataka nilinunua nimelipa nimenunua shida tatizo
    karibu mambo poa safi nzuri sijui kuna iko imeisha bila
    """
)
SWAHILI_PREFIXES = ("nime", "sija", "haija", "hazija", "tume", "hatuja", "nili", "tuna")

QUESTION_WORDS = _word_set(
    """
    how what when where why which who whom whose can could would will should is are am do
    does did may je vipi lini wapi nini kwanini mbona naweza nawezaje ngapi gani
    """
)

_POSITIVE_CLOSING = (
    "thank",
    "thanks",
    "thank you",
    "thankyou",
    "thanku",
    "thank u",
    "thx",
    "tnx",
    "asante",
    "ahsante",
    "asanteni",
    "shukran",
    "shukrani",
    "it worked",
    "it works",
    "works now",
    "working now",
    "it's working",
    "is working",
    "received",
    "got it",
    "restored",
    "sorted",
    "resolved",
    "fixed",
    "accepted",
    "imefika",
    "zimefika",
    "imeingia",
    "zimeingia",
    "nimepokea",
    "nimeipata",
    "nimezipata",
    "imerudi",
    "umerudi",
    "imewaka",
    "imekubali",
    "inafanya kazi",
    "imefanya kazi",
)
_NEGATIVE_CLOSING = (
    "still",
    "not yet",
    "not working",
    "not received",
    "third time",
    "3rd time",
    "useless",
    "nothing happened",
    "nothing has changed",
    "received nothing",
    "got nothing",
    "nothing yet",
    "same problem",
    "no power",
    "no electricity",
    "no light",
    "no lights",
    "no response",
    "no reply",
    "bado",
    "haifanyi kazi",
    "haikubali",
    "haiwaki",
    "hakuna umeme",
    "hakuna stima",
)
_NEGATIVE_CLOSING_EXTRA = (
    # "again", but not "thanks again"
    r"(?<!thanks )(?<!thank you )(?<!asante )\bagain\b",
    # a negated outcome: "not received", "didn't work", "haven't got it yet"
    r"(?:\b(?:not|never|cannot)|n't)\s+(?:\w+\s+){0,2}?"
    r"(?:work|works|working|worked|receive|received|get|got|come|came|arrive|arrived|"
    r"restored|fixed|resolved|sorted|reflect|reflected|reflecting|load|loaded|accept|"
    r"accepted|help|helped)\b",
    # Swahili negative perfect: haijafika, sijapata, hazijaingia ... (not "sijambo")
    r"\b(?:haija|hazija|hauja|sija(?!mbo)|hatuja)\w+",
)
_AGENT_RESOLVED = (
    "restored",
    "resolved",
    "fixed",
    "sorted",
    "refunded",
    "credited",
    "reversed",
    "processed",
    "reconnected",
    "activated",
    "resent",
    "here is your",
    "here's your",
    "your token is",
    "your tokens are",
    "token yako ni",
    "tokeni yako ni",
    "we have sent",
    "we've sent",
    "anything else",
    "you're welcome",
    "you are welcome",
    "glad to help",
    "happy to help",
    "have a nice day",
    "have a good day",
    "have a great day",
    "karibu tena",
    "imerejeshwa",
    "imerekebishwa",
    "imeshughulikiwa",
    "tumetuma",
    "imetumwa",
)
_CHASING = (
    "anyone",
    "anybody",
    "any one there",
    "are you there",
    "is someone there",
    "third time",
    "3rd time",
    "fourth time",
    "many times",
    "several times",
    "how long",
    "still waiting",
    "any update",
    "any feedback",
    "no response",
    "no reply",
    "nobody",
    "mbona",
    "mko wapi",
    "nasubiri",
    "nimesubiri",
    "tena na tena",
    "mara ya tatu",
    "mara ngapi",
)
_CHASING_EXTRA = (
    r"\bh[ae]l+o+\s*\?",
    r"\bmpo\s*\?",
    r"(?<!thanks )(?<!thank you )(?<!asante )\bagain\b",
)

_TOKEN = re.compile(r"\w+")
_WORD = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_NOT_WORD = re.compile(r"[\W_]+")
_SPACES = re.compile(r"\s+")
_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "`": "'"})


def _phrase_pattern(phrase: str) -> str:
    words = phrase.casefold().split()
    return r"\s+".join(re.escape(word) for word in words)


def _phrases_regex(
    phrases: Iterable[str], extra: Iterable[str] = (), flags: int = 0
) -> re.Pattern[str]:
    """One regex for whole-word phrases (longest first) plus raw extra patterns."""
    ordered = sorted({p.casefold() for p in phrases}, key=lambda p: (-len(p), p))
    alternatives = [rf"(?<!\w)(?:{'|'.join(_phrase_pattern(p) for p in ordered)})(?!\w)"]
    alternatives.extend(extra)
    return re.compile("|".join(f"(?:{a})" for a in alternatives), flags)


_POSITIVE_RE = _phrases_regex(_POSITIVE_CLOSING)
_NEGATIVE_RE = _phrases_regex(_NEGATIVE_CLOSING, _NEGATIVE_CLOSING_EXTRA)
# A fix reported in the past, not promised: "has been restored", not "will be restored".
_AGENT_RESOLVED_RE = re.compile(
    r"(?<!\bbe )(?<!\bbeing )(?<!\bnot )(?:" + _phrases_regex(_AGENT_RESOLVED).pattern + ")"
)
_CHASING_RE = _phrases_regex(_CHASING, _CHASING_EXTRA)
_IDIOMS_RE = _phrases_regex(_SWAHILI_IDIOMS, flags=re.IGNORECASE)


def _fold(text: str) -> str:
    """Lowercase, straight apostrophes, single spaces: what every cue is matched against."""
    return _SPACES.sub(" ", text.translate(_QUOTES).casefold()).strip()


def sentiment_bucket(compound: float) -> int:
    """A VADER compound score in [-1, 1] as a 1-5 score."""
    if compound <= -0.5:
        return 1
    if compound <= -0.05:
        return 2
    if compound < 0.05:
        return 3
    if compound < 0.5:
        return 4
    return 5


def satisfaction(resolved: bool, final_sentiment: int) -> int:
    score = 4 if resolved else 2
    if final_sentiment >= 4:
        score += 1
    elif final_sentiment <= 2:
        score -= 1
    return score


def is_question(text: str) -> bool:
    if "?" in text:
        return True
    first = _WORD.search(text)
    return first is not None and first.group().casefold() in QUESTION_WORDS


def detect_language(texts: Sequence[str]) -> str:
    words = [word for text in texts for word in _WORD.findall(text.casefold())]
    if not words:
        return "en"
    swahili = sum(
        1 for word in words if word in SWAHILI_MARKERS or word.startswith(SWAHILI_PREFIXES)
    )
    return "sw" if swahili / len(words) >= SWAHILI_SHARE else "en"


def _tokens(text: str) -> list[str]:
    return _TOKEN.findall(text.casefold())


@dataclass(frozen=True, slots=True)
class Taxonomy:
    labels: tuple[str, ...]  # normalised, in file order
    # keyword's first word -> (topic index, the keyword's words) for every keyword
    keywords: dict[str, tuple[tuple[int, tuple[str, ...]], ...]]
    digest: str  # SHA-256 of the file's bytes, hex

    def hits(self, text: str) -> list[int]:
        """Keyword occurrences per topic; every keyword counts, overlapping or not."""
        hits = [0] * len(self.labels)
        tokens = _tokens(text)
        for start, token in enumerate(tokens):
            for index, words in self.keywords.get(token, ()):
                if len(words) == 1 or tuple(tokens[start : start + len(words)]) == words:
                    hits[index] += 1
        return hits

    def pick(self, primary: str, fallback: Callable[[], str]) -> list[str]:
        """Up to MAX_TOPICS labels by hits in primary (else fallback()), file order on ties."""
        for text in (primary, None):
            hits = self.hits(fallback() if text is None else text)
            ranked = sorted((-count, index) for index, count in enumerate(hits) if count)
            if ranked:
                return [self.labels[index] for _, index in ranked[:MAX_TOPICS]]
        return [DEFAULT_TOPIC]


def _read_topics(topics_file: str | Path | None) -> tuple[bytes, str]:
    if topics_file is None:
        resource = resources.files("powerpulse.analysis").joinpath("data", "topics.json")
        where = "the default topics file"
        try:
            return resource.read_bytes(), where
        except OSError as exc:  # pragma: no cover - a broken installation
            raise ConfigurationError(f"Cannot read {where}: {exc}") from exc
    path = Path(topics_file)
    where = f"topics file {str(path)!r}"
    try:
        return path.read_bytes(), where
    except OSError as exc:
        raise ConfigurationError(f"Cannot read {where}: {exc.strerror or exc}") from exc


def load_taxonomy(topics_file: str | Path | None = None) -> Taxonomy:
    """Read and check a topics file; any problem is a ConfigurationError naming it."""
    raw, where = _read_topics(topics_file)

    def invalid(reason: str) -> ConfigurationError:
        return ConfigurationError(f"Invalid {where}: {reason}")

    try:
        document: Any = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise invalid(f"not UTF-8 JSON ({exc})") from exc
    if not isinstance(document, dict):
        raise invalid("expected an object with 'version' and 'topics'")
    version = document.get("version")
    if isinstance(version, bool) or version != 1:
        raise invalid("'version' must be 1")
    entries = document.get("topics")
    if not isinstance(entries, dict) or not entries:
        raise invalid("'topics' must be a non-empty object of topic -> keyword list")
    labels: list[str] = []
    keywords: dict[str, list[tuple[int, tuple[str, ...]]]] = {}
    for name, entry in entries.items():
        label = normalise_topic(name)
        if not label:
            raise invalid(f"topic name {name!r} is empty once normalised")
        if label in labels:
            raise invalid(f"topic {name!r} duplicates {label!r}")
        if not isinstance(entry, list) or not entry:
            raise invalid(f"topic {name!r} needs a non-empty list of keywords")
        index = len(labels)
        labels.append(label)
        for keyword in entry:
            words = tuple(_tokens(keyword)) if isinstance(keyword, str) else ()
            if not words:
                raise invalid(f"topic {name!r} has a keyword without letters or digits")
            listed = keywords.setdefault(words[0], [])
            if (index, words) not in listed:
                listed.append((index, words))
    return Taxonomy(
        labels=tuple(labels),
        keywords={first: tuple(listed) for first, listed in keywords.items()},
        digest=hashlib.sha256(raw).hexdigest(),
    )


def _minute(line: TranscriptLine) -> datetime | None:
    try:
        return datetime.fromisoformat(f"{line.day}T{line.sent_at_minute}")
    except ValueError:
        return None


def _wait_phrase(start: TranscriptLine, reply: TranscriptLine) -> str:
    begin, end = _minute(start), _minute(reply)
    if begin is None or end is None:
        return ""
    minutes = max(0, int((end - begin).total_seconds() // 60))
    if minutes < 1:
        return " within a minute"
    if minutes < 60:
        return f" after {minutes} min"
    if minutes < 24 * 60:
        hours, rest = divmod(minutes, 60)
        return f" after {hours} h {rest} min" if rest else f" after {hours} h"
    days = minutes // (24 * 60)
    return f" after {days} day" + ("s" if days > 1 else "")


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else ", ".join(items[:-1]) + " and " + items[-1]


def _count(messages: int) -> str:
    return f"{messages} message" + ("" if messages == 1 else "s")


def _normalised(text: str) -> str:
    return _NOT_WORD.sub(" ", text.casefold()).strip()


def _repeats(texts: Sequence[str]) -> bool:
    """A customer text of 10+ characters repeats (or nearly repeats) an earlier one."""
    seen: list[tuple[str, frozenset[str]]] = []
    for text in texts:
        norm = _normalised(text)
        if len(norm) < 10:
            continue
        words = frozenset(norm.split())
        for earlier, earlier_words in seen[-REPEAT_LOOKBACK:]:
            if norm == earlier:
                return True
            if len(words) >= 3 and len(earlier_words) >= 3:
                shared = len(words & earlier_words)
                if shared >= 0.8 * (len(words) + len(earlier_words) - shared):
                    return True
        seen.append((norm, words))
    return False


class LexiconAnalyzer:
    """Deterministic, offline analysis by rules; see the module docstring for the rules."""

    def __init__(self, topics_file: str | Path | None = None) -> None:
        self._taxonomy = load_taxonomy(topics_file)
        try:
            vader_version = metadata.version("vaderSentiment")
        except metadata.PackageNotFoundError:  # pragma: no cover - vendored copies
            vader_version = "unknown"
        self.fingerprint = AnalyzerFingerprint(
            ANALYZER_NAME,
            f"vader-{vader_version}+topics-{self._taxonomy.digest[:12]}",
            LEXICON_VERSION,
        )
        self._vader = SentimentIntensityAnalyzer()
        self._vader.lexicon.update(SWAHILI_LEXICON)
        # Chat texts repeat a lot ("ok", "thanks", "hello?"); scoring each once is cheaper.
        self._compound = lru_cache(maxsize=65_536)(self._score)

    def _score(self, text: str) -> float:
        # Case is kept: VADER reads "USELESS" as stronger than "useless".
        text = _IDIOMS_RE.sub(lambda m: _SWAHILI_IDIOMS[_fold(m.group())], text)
        return float(self._vader.polarity_scores(text)["compound"])

    async def analyze(self, conversations: Sequence[ConversationInput]) -> list[AnalysisOutcome]:
        batch = list(conversations)
        if len(batch) <= INLINE_BATCH:
            return self._outcomes(batch)
        return await asyncio.to_thread(self._outcomes, batch)

    async def aclose(self) -> None:
        return None

    def _outcomes(self, batch: Sequence[ConversationInput]) -> list[AnalysisOutcome]:
        outcomes: list[AnalysisOutcome] = []
        for conversation in batch:
            try:
                outcomes.append(AnalysisOutcome(conversation.chat_id, self.judge(conversation)))
            except Exception as exc:  # one bad conversation must not sink the batch
                outcomes.append(
                    AnalysisOutcome(
                        conversation.chat_id, None, error=f"lexicon analysis failed: {exc!r}"
                    )
                )
        return outcomes

    def judge(self, conversation: ConversationInput) -> ConversationJudgement:
        lines = conversation.lines
        first_customer = next((i for i, ln in enumerate(lines) if ln.sender == CUSTOMER), None)
        after = lines[first_customer + 1 :] if first_customer is not None else ()
        offset = (first_customer or 0) + 1
        first_agent = next((offset + i for i, ln in enumerate(after) if ln.sender == AGENT), None)
        first_bot = next((offset + i for i, ln in enumerate(after) if ln.sender == BOT), None)
        first_reply = first_agent if first_agent is not None else first_bot

        texts = [
            (i, ln.content.strip())
            for i, ln in enumerate(lines)
            if ln.sender == CUSTOMER and ln.content and ln.content.strip()
        ]
        customer_texts = [text for _, text in texts]
        folded = [_fold(text) for text in customer_texts]

        # Sentiment
        if customer_texts:
            compounds = [self._compound(text) for text in customer_texts]
            sentiment = sentiment_bucket(sum(compounds) / len(compounds))
            initial, final = sentiment_bucket(compounds[0]), sentiment_bucket(compounds[-1])
        else:
            sentiment = initial = final = 3

        # Resolution
        resolved, reason = self._resolution(lines, texts, folded, first_reply)

        # Satisfaction and effort
        satisfaction_score = satisfaction(resolved, final) if customer_texts else 3
        last_reply = max((i for i, ln in enumerate(lines) if ln.sender in (AGENT, BOT)), default=-1)
        effort = 5
        if _repeats(customer_texts):
            effort -= 1
        before_agent = sum(1 for i, _ in texts if first_agent is None or i < first_agent)
        if before_agent >= 3:
            effort -= 1
        if conversation.contact_count > 1:
            effort -= 1
        if not resolved and sum(1 for i, _ in texts if i > last_reply) >= 2:
            effort -= 1
        if any(_CHASING_RE.search(text) for text in folded):
            effort -= 1
        effort = max(1, effort)

        # Topics and language
        topics = self._taxonomy.pick(
            "\n".join(customer_texts),
            lambda: "\n".join(ln.content for ln in lines if ln.content),
        )
        language = detect_language(customer_texts)

        summary = self._summary(
            conversation,
            lines,
            first_customer,
            first_agent,
            first_bot,
            topics,
            language,
            has_text=bool(texts),
        )
        summary += "; resolved" if resolved else "; not resolved"
        summary += f": {reason}." if reason else "."

        return ConversationJudgement(
            chat_id=conversation.chat_id,
            satisfaction_score=satisfaction_score,
            sentiment_score=sentiment,
            initial_sentiment=initial,
            final_sentiment=final,
            resolved=resolved,
            effort_score=effort,
            topics=topics,
            summary=summary,
            language=language,
        )

    @staticmethod
    def _resolution(
        lines: Sequence[TranscriptLine],
        texts: Sequence[tuple[int, str]],
        folded: Sequence[str],
        first_reply: int | None,
    ) -> tuple[bool, str]:
        if not texts:
            return False, ""
        if first_reply is None:
            return False, ""  # the summary already says nobody replied
        reactions = [f for (i, _), f in zip(texts, folded, strict=True) if i > first_reply]
        for text in reversed(reactions[-CLOSING_WINDOW:]):
            if _NEGATIVE_RE.search(text):
                return False, "the customer still reported a problem"
            if _POSITIVE_RE.search(text):
                return True, "the customer confirmed"
        last_customer = max(i for i, ln in enumerate(lines) if ln.sender == CUSTOMER)
        trailing = [ln for ln in lines[last_customer + 1 :] if ln.sender in (AGENT, BOT)]
        if not trailing:
            return False, "the customer's last message went unanswered"
        if any(
            ln.sender == AGENT and ln.content and _AGENT_RESOLVED_RE.search(_fold(ln.content))
            for ln in trailing
        ):
            return True, "the agent reported a fix"
        if is_question(texts[-1][1]) and any(
            ln.content and not ln.content.rstrip().endswith("?") for ln in trailing
        ):
            return True, "the customer's question was answered"
        return False, "the customer did not confirm"

    @staticmethod
    def _summary(
        conversation: ConversationInput,
        lines: Sequence[TranscriptLine],
        first_customer: int | None,
        first_agent: int | None,
        first_bot: int | None,
        topics: Sequence[str],
        language: str,
        has_text: bool,
    ) -> str:
        if first_customer is None:
            return f"No customer message among {_count(len(lines))}"
        if not has_text:
            subject = "Customer sent only attachments"
        elif language == "sw":
            subject = "Customer wrote in Swahili"
        else:
            subject = "Customer wrote"
        subject += f" about {_join(topics)}"
        if conversation.contact_count > 1:
            subject += f" (contact {conversation.contact_count})"
        start = lines[first_customer]
        if first_agent is not None:
            reply = "an agent replied" + _wait_phrase(start, lines[first_agent])
        elif first_bot is not None:
            reply = "only a bot replied"
        else:
            reply = "nobody replied"
        return f"{subject}; {reply}; {_count(len(lines))}"
