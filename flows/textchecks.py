"""Heuristics over what a requester typed: does it try to instruct the advisor or the
approvers (``prompt_injection``), and does the purpose say what is bought and why
(``missing_justification``)? Pure functions over text, in several languages.

Both work on a *folded* text: Unicode-normalised (NFKC), invisible characters removed,
case-folded, and accents dropped from Latin letters, so ``Ignorez les règles`` and
``IGNOREZ LES REGLES`` read the same and zero-width spaces hide nothing.

Injection is decided on phrases, never on single words, so ordinary purposes that merely
contain ``ignore``, ``system``, ``AI`` or ``approval`` (``Ignore-proof cable covers``,
``System administrator course``, ``AI assistant seats``) stay clean. A text is flagged when

* it contains a *strong* phrase: an instruction to ignore or forget instructions, rules or
  checks; a chat-template or role marker (``<|im_start|>``, ``[INST]``, ``system prompt``,
  ``you are now``); an order about the verdict itself (``mark this as approved``, ``respond
  with approve``, ``"risk": "low"``, ``do not flag this``); or
* it *addresses* the advisor or the approvers (``Dear AI,``, ``Note to the approver:``,
  ``KI:``) and asks for a verdict or to skip scrutiny, or
* it asks for a verdict (``approve``, ``genehmigen``, ``aprueba``…) together with skipping
  scrutiny (``without review``, ``ohne Prüfung``, ``sans vérification``…).

Most texts hold none of the words these patterns need, and :mod:`flows.prefilter` skips
the searches that cannot match (their results are the searches' own either way).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass
from functools import cache, lru_cache

from flows.prefilter import Prefilter, prefilter, words_of

_INVISIBLE = dict.fromkeys(map(ord, "\u00ad\u200b\u200c\u200d\u200e\u200f\u2060\u2061\u2062"
                               "\u2063\u2064\ufeff\u180e"), None)


def fold(text: str) -> str:
    """NFKC, invisible characters out, case-folded, accents dropped from Latin letters."""
    if text.isascii():  # the common case: every step but the last changes nothing then
        return _squeeze(text.lower())
    text = _INVISIBLE_RE.sub("", unicodedata.normalize("NFKC", text)).casefold()
    if not text.isascii():
        # é -> e, ü -> u; marks on other scripts are letters' parts, kept
        text = unicodedata.normalize("NFC", _drop_marks_after_ascii(
            unicodedata.normalize("NFKD", text)))
        text = text.replace("ß", "ss").replace("ø", "o").replace("æ", "ae").replace("œ", "oe")
    return _squeeze(text)


_INVISIBLE_RE = re.compile("[" + "".join(map(chr, _INVISIBLE)) + "]")  # quicker than translate
_SPACES = re.compile(r"[ \t\r\f\v]+")
_ODD_SPACE = re.compile(r"[\t\r\f\v]")
_NON_ASCII = re.compile(r"[^\x00-\x7f]")


def _squeeze(text: str) -> str:
    """Runs of spaces and tabs as one space (looked for first: most texts have none)."""
    if "  " in text or (not text.isprintable() and _ODD_SPACE.search(text)):
        return _SPACES.sub(" ", text)
    return text


def _drop_marks_after_ascii(text: str) -> str:
    """``text`` without the runs of combining marks that follow an ASCII character."""
    marks = frozenset(c for c in _NON_ASCII.findall(text) if unicodedata.combining(c))
    if not marks:
        return text
    kept: list[str] = []
    last = 0
    for run in _runs_of(marks).finditer(text):
        start = run.start()
        if start and text[start - 1].isascii():  # what precedes a run is no mark
            kept.append(text[last:start])
            last = run.end()
    kept.append(text[last:])
    return "".join(kept)


@lru_cache(maxsize=256)
def _runs_of(marks: frozenset[str]) -> re.Pattern[str]:
    one = "[" + "".join(re.escape(m) for m in sorted(marks)) + "]"
    return re.compile(f"{one}{one}*")  # not {one}+: a leading class lets re skip ahead


def _words(*alternatives: str) -> str:
    return "(?:" + "|".join(alternatives) + ")"


# Between two words of a phrase: spaces, punctuation, hyphens or underscores.
_S = r"[\W_]+"


def _phrase(verbs: str, fillers: str, nouns: str, *, gap: int = 4) -> str:
    """``verb (filler){0,gap} noun`` as whole words."""
    return rf"\b{verbs}(?:{_S}{fillers}){{0,{gap}}}{_S}{nouns}\b"


# ---------------------------------------------------------------- injection vocabulary
# "ignore / forget ... instructions" in each language, verb first (and noun first where
# the language puts the verb last).

_OVERRIDE_VERBS = _words(
    # en
    "ignore", "disregard", "forget", "override", "bypass", "neglect",
    # de
    "ignoriere", "ignorier", "ignorieren", "vergiss", "vergesst", "vergessen", "missachte",
    "missachten", "uberspringe", "ubergehe",
    # fr
    "ignorez", "ignorer", "oublie", "oubliez", "oublier", "neglige", "negligez",
    "ne tiens pas compte", "ne tenez pas compte",
    # es / it / pt
    "ignora", "ignoren", "ignorar", "olvida", "olvide", "olviden", "olvidar", "omite",
    "omita", "descarta", "descarte", "ignori", "ignorate", "dimentica", "dimenticate",
    "ignorem", "esqueca", "esquecam", "esquecer", "desconsidere", "desconsidera",
    # nl / pl / sv / tr
    "negeer", "vergeet", "zignoruj", "ignoruj", "zapomnij", "glom", "strunta i",
    "yok say", "gormezden gel",
    # ru / uk
    "игнорируй", "игнорируйте", "проигнорируй", "проигнорируйте", "забудь", "забудьте",
    "игноруй", "забудь про",
)
_OVERRIDE_FILLERS = _words(
    "all", "any", "the", "your", "my", "previous", "prior", "above", "earlier", "preceding",
    "foregoing", "former", "existing", "system", "these", "those", "other", "of", "every",
    "safety", "security", "approval", "advisor", "ai", "original", "initial", "given",
    "policy", "budget", "spending", "purchasing",
    "alle", "die", "der", "den", "deine", "ihre", "vorherigen", "vorigen", "bisherigen",
    "obigen", "fruheren", "vorangegangenen", "samtliche", "samtlichen", "gegebenen",
    "toutes", "tous", "les", "tes", "vos", "des", "precedentes", "precedents",
    "anterieures", "ci-dessus", "de", "todas", "todos", "las", "los", "tus", "sus",
    "previas", "anteriores", "tutte", "tutti", "le", "gli", "tue", "sue", "precedenti",
    "as", "os", "suas", "tuas", "eerdere", "vorige", "voorgaande", "je", "jouw",
    "wszystkie", "poprzednie", "alla", "tidigare", "tum", "onceki",
    "все", "всё", "предыдущие", "прежние", "свои", "твои", "эти", "вышеуказанные",
)
_OVERRIDE_NOUNS = _words(
    "instructions?", "prompts?", "rules", "guidelines", "directions", "directives",
    "guardrails", "programming", "system prompt", "constraints", "checks?", "controls",
    "prufung", "prufungen", "kontrolle", "kontrollen", "verification", "verifications",
    "controles?", "revision", "verificacion", "controllo", "controlli", "verifica",
    "verificacao", "controle",
    "anweisungen", "anweisung", "instruktionen", "regeln", "vorgaben", "richtlinien",
    "befehle", "consignes", "regles", "directives", "indications", "ordres",
    "instrucciones", "reglas", "indicaciones", "directrices", "ordenes", "normas",
    "istruzioni", "regole", "direttive", "instrucoes", "regras", "orientacoes",
    "diretrizes", "instructies", "regels", "aanwijzingen", "opdrachten", "instrukcje",
    "polecenia", "zasady", "instruktioner", "regler", "talimatlari", "kurallari",
    "инструкции", "инструкций", "указания", "правила", "команды",
)
_OVERRIDE_VERBS_LAST = _words("ignorieren", "vergessen", "missachten", "ignorer", "oublier")

_CJK_OVERRIDE = (
    r"(?:忽略|无视|無視|忽视|忽視|忘记|忘記|不要理会|不要理會).{0,12}?"
    r"(?:指令|指示|说明|說明|规则|規則|提示|要求)"
    r"|(?:指示|命令|ルール|指令|規則).{0,12}?(?:無視|忘れ)"
    r"|(?:지시|명령|규칙|지침).{0,12}?(?:무시|잊)"
)

# Markers of a chat template or of talking to the model as a model.
_ROLE_MARKERS = (
    r"<\|\s*(?:im_start|im_end|system|assistant|user|endoftext|eot_id|start_header_id)\s*\|>"
    r"|\[/?inst\]|<<\s*/?sys\s*>>|</?\s*(?:system|assistant|instructions?|prompt)\s*>"
    r"|</\s*(?:purpose|request|untrusted\w*|data|input|user_input)\s*>"
    r"|#{2,}\s*(?:system|instruction|new instructions?)\b"
    r"|\b(?:system|developer)\s+(?:prompt|message|override|instructions?)\b"
    r"|(?:^|\n)\s*(?:system|assistant|developer)\s*:"
    r"|\byou are now\b|\bfrom now on,? you\b|\bpretend (?:to be|you are)\b"
    r"|\bact as (?:an?|the|my) (?:ai|assistant|approver|admin|administrator|advisor|"
    r"model|language model|chatbot|dan)\b"
    r"|\bdeveloper mode\b|\bjailbreak\b|\bdo anything now\b|\bdan mode\b"
    r"|\bdu bist (?:jetzt|nun|ab sofort)\b|\btu es (?:maintenant|desormais)\b"
    r"|\b(?:ahora|a partir de ahora) eres\b|\bora sei\b|\bvoce agora e\b"
    r"|\bnouvelles instructions\b|\bneue anweisungen?\b|\bnuevas instrucciones\b"
    r"|\bnew instructions?\s*:"
)

# Orders about the verdict: what to output, how to classify, what not to flag.
_SAFE_WORDS = _words(
    "approved", "safe", "low[- ]risk", "no[- ]risk", "risk[- ]free", "legit", "legitimate",
    "clean", "compliant", "trusted", "verified", "benign", "fine", "ok", "okay",
    "genehmigt", "sicher", "unbedenklich", "risikoarm", "risikofrei", "approuvee?s?",
    "sure", "sans risque", "faible risque", "aprobad[ao]", "segur[ao]", "bajo riesgo",
    "sin riesgo", "approvat[ao]", "sicur[ao]", "basso rischio", "aprovad[ao]",
    "baixo risco", "goedgekeurd", "veilig",
)
_SUBJECT = _words(
    "this", "it", "me", "the request", "this request", "this purchase", "the purchase",
    "this one", "dies", "das", "es", "diese anfrage", "den antrag", "diesen antrag",
    "cette demande", "la demande", "ceci", "cela", "esta solicitud", "la solicitud",
    "esto", "la richiesta", "questa richiesta", "este pedido", "esta solicitacao",
    "dit", "deze aanvraag", "het verzoek",
)
_CLASSIFY_VERBS = _words(
    "mark", "flag", "classify", "rate", "label", "treat", "score", "tag", "set", "consider",
    "report", "list", "record", "markiere", "markieren", "stufe", "bewerte", "behandle",
    "einstufen", "marque", "marquez", "classe", "classez", "considere", "considerez",
    "traite", "traitez", "marca", "marque", "clasifica", "clasifique", "considera",
    "considere", "trata", "trate", "segna", "classifica", "markeer", "beschouw",
)
_VERDICT_ORDERS = (
    rf"\b{_CLASSIFY_VERBS}{_S}{_SUBJECT}{_S}(?:(?:as|als|comme|como|come|ein)"
    rf"{_S})?(?:(?:a|an|une?|un|una)\s+)?{_SAFE_WORDS}\b"
    rf"|\b{_CLASSIFY_VERBS}{_S}(?:as|als|comme|como|come){_S}{_SAFE_WORDS}"
    r"\s*(?:[.!,;:)\]]|$|and\b|und\b|et\b|y\b|please\b|now\b)"
    r"|\b(?:return|output|respond|reply|answer|say|print|write|recommend|set)"
    r"(?:[\W_]+(?:with|only|just|exactly|the word|a|an)){0,3}[\W_]+"
    r"[\"'`]?(?:approve[ds]?|approval|low risk|no flags)\b"
    r"|[\"']?\brecommendation[\"']?\s*[:=]\s*[\"']?\s*approve"
    r"|[\"']?\brisk[\"']?\s*[:=]\s*[\"']?\s*low\b"
    r"|[\"']?\bflags[\"']?\s*[:=]\s*\[\s*\]"
    r"|\b(?:do not|don'?t|never|no need to)\s+(?:flag|report|escalate|question|scrutini[sz]e)"
    r"\s+(?:this|it|the request|this request|this purchase|me|anything)\b"
    r"|\b(?:raise|add|return|output|report)\s+(?:no|zero)\s+(?:flags?|warnings?|issues?)\b"
    r"|\b(?:auto[- ]?approve|rubber[- ]stamp)\s+(?:this|it|me|the request)\b"
    r"|\b(?:approve|approve this|approve it)\s+(?:immediately|automatically|right away|"
    r"without (?:any )?(?:question|questions|review|checking|checks|looking))\b"
    r"|\bmust (?:be )?(?:approved?|recommended?) (?:by you|without)\b"
    r"|\bjust (?:approve|click (?:on )?approve|sign (?:it )?off|accept) (?:it|this)\b"
)

# Someone addressed: the advisor, the model, the approvers.
_ADDRESSEE = _words(
    "ai", "a\\.i\\.", "bot", "llm", "gpt", "chatgpt", "claude", "model", "assistant",
    "advisor", "adviser", "reviewer", "reviewers", "approver", "approvers", "auditor",
    "language model", "ai model", "ai reviewer", "ai advisor", "ai assistant",
    "whoever (?:reviews|approves|reads|checks) (?:this|it)",
    "(?:the )?(?:person|human|people) (?:reviewing|approving|checking) (?:this|it)",
    "ki", "assistent", "prufer", "genehmiger", "berater", "modell", "ia", "conseiller",
    "approbateur", "valideur", "modele", "asistente", "asesor", "aprobador",
    "aprobadores", "revisor", "modelo", "assistente", "consulente", "approvatore",
    "revisore", "aprovador", "beoordelaar", "goedkeurder", "ии", "ассистент", "модель",
    "бот", "人工智能", "助手", "审批人", "審批人", "アシスタント", "承認者",
)
_GREETING = _words(
    "dear", "hey", "hi", "hello", "attention", "attn", "note to", "note for", "message to",
    "message for", "instructions? for", "to", "for", "liebe", "lieber", "liebes", "hallo",
    "an", "an die", "an den", "hinweis an", "hinweis fur", "cher", "chere", "bonjour",
    "salut", "a l'", "au", "note pour", "querido", "querida", "estimado", "estimada",
    "hola", "para", "nota para", "caro", "cara", "gentile", "ciao", "nota per", "prezado",
    "prezada", "ola", "beste", "hoi", "aan", "уважаемый", "дорогой", "привет",
)
_ARTICLE = _words("the", "my", "our", "dear", "le", "la", "l'", "el", "der", "die", "den",
                  "il", "lo", "o", "a", "de", "het", "les", "los", "las")
_VOCATIVE = (
    rf"(?:^|[.!?;\n]\s*|\(\s*){_GREETING}\s+(?:{_ARTICLE}\s+)?{_ADDRESSEE}\b"
    rf"|(?:^|[.!?;\n(]\s*)(?:{_ARTICLE}\s+)?{_ADDRESSEE}\s*[:,!]"
    rf"|\b{_ADDRESSEE}\s*[:!]\s"
)

# Asking for the verdict (imperative or infinitive), per language.
_VERDICT = (
    r"\b(?:approve|auto[- ]?approve|accept|greenlight|green-light|sign off|rubber[- ]stamp"
    r"|recommend approv\w*|mark (?:it|this) approved|genehmige|genehmigen|genehmigt werden"
    r"|freigeben|gib \w+ frei|bewillige|bewilligen|approuve|approuvez|approuver|valide|"
    r"validez|valider|accepte|acceptez|aprueba|apruebe|aprueben|aprobar|acepta|acepte|"
    r"autoriza|autorice|approva|approvate|approvare|autorizza|aprove|aprova|aprovar|"
    r"autorize|keur \w+ goed|goedkeuren|zatwierdz\w*|godkann|onayla|"
    r"одобри|одобрите|утверди|утвердите)\b"
    r"|批准|通过|同意|承認して|承認しろ|承認せよ|승인"
)
# Asking to skip scrutiny.
_SKIP_REVIEW = (
    r"\b(?:without|no|skip|skipping|bypass|bypassing|no need for|no need to)"
    r"(?:\s+(?:any|further|the|a|more|additional))?\s+"
    r"(?:review|reviewing|checks?|checking|questions?|verification|verifying|scrutiny|"
    r"approval process|flags?|look|looking|delay)\b"
    r"|\b(?:ohne|keine)\s+(?:weitere\s+)?(?:prufung|pruefung|kontrolle|ruckfrage|"
    r"rueckfrage|fragen|flags?|verzogerung)\b"
    r"|\bsans\s+(?:aucune?\s+)?(?:verification|controle|examen|question|delai|revue)\b"
    r"|\bsin\s+(?:ninguna?\s+)?(?:revision|revisar|verificacion|control|preguntas|"
    r"demora|comprobar)\b"
    r"|\bsenza\s+(?:alcuna?\s+)?(?:verifica|controllo|revisione|domande)\b"
    r"|\bsem\s+(?:nenhuma?\s+)?(?:revisao|verificacao|controle|perguntas)\b"
    r"|\bzonder\s+(?:controle|controleren|vragen|review)\b"
    r"|\bбез\s+(?:проверки|вопросов)\b|无需审核|無需審核|不用审核|直接批准|確認せずに|검토 없이"
    r"|\b(?:immediately|right away|asap|sofort|umgehend|immediatement|inmediatamente|"
    r"subito|imediatamente|meteen|срочно)\b"
)
# Telling the advisor what to do with its output or its flags.
_INSTRUCT = (
    r"\b(?:ignore|disregard|forget|mark|flag|classify|rate|recommend|return|output|respond|"
    r"reply|say|do not flag|don'?t flag|ignoriere|vergiss|markiere|ignorez|oubliez|marquez|"
    r"ignora|olvida|marca|dimentica|segna|esqueca|negeer|vergeet)\b"
)

_STRONG = re.compile("|".join([
    _phrase(_OVERRIDE_VERBS, _OVERRIDE_FILLERS, _OVERRIDE_NOUNS),
    rf"\b{_OVERRIDE_NOUNS}(?:{_S}\w+){{0,2}}{_S}{_OVERRIDE_VERBS_LAST}\b",
    r"\b(?:ignore|disregard|forget)\s+(?:everything|anything|all)\s+"
    r"(?:above|before|else|previous|prior|said|you were told)\b",
    _CJK_OVERRIDE, _ROLE_MARKERS, _VERDICT_ORDERS]))
_VOCATIVE_RE = re.compile(_VOCATIVE)
_VERDICT_RE = re.compile(_VERDICT)
_SKIP_RE = re.compile(_SKIP_REVIEW)
_INSTRUCT_RE = re.compile(_INSTRUCT)


@dataclass(frozen=True, slots=True)
class _Gates:
    """Each injection pattern with the words one of which every match of it contains."""

    strong: Prefilter
    vocative: Prefilter
    verdict: Prefilter
    skip: Prefilter
    instruct: Prefilter


@cache
def _gates() -> _Gates:
    """Built on first use (about 0.1 s of reading the patterns, once per process)."""
    def gate(pattern: re.Pattern[str]) -> Prefilter:
        return prefilter(pattern, common=_STOP)

    return _Gates(gate(_STRONG), gate(_VOCATIVE_RE), gate(_VERDICT_RE), gate(_SKIP_RE),
                  gate(_INSTRUCT_RE))


@dataclass(frozen=True, slots=True)
class Injection:
    """Why a text reads as instructions to the advisor or the approvers."""

    reason: str
    quotes: tuple[str, ...]


def _quote(text: str, match: re.Match[str]) -> str:
    """The match with a few words around it, cut at word boundaries."""
    start, end = match.span()
    before = text[max(0, start - 24):start]
    after = text[end:end + 24]
    if start > 24 and " " in before:
        before = before[before.index(" ") + 1:]
    if end + 24 < len(text) and " " in after:
        after = after[:after.rindex(" ")]
    snippet = re.sub(r"\s+", " ", before + text[start:end] + after).strip()
    return "“" + (snippet[:100] + "…" if len(snippet) > 100 else snippet) + "”"


def find_injection(*texts: str | None) -> Injection | None:
    """An :class:`Injection` when the texts address instructions to the advisor or the
    approvers; ``None`` for ordinary text."""
    return _injection(fold("\n".join(t for t in texts if t)))


def read_request(purpose: str, *others: str | None) -> tuple[Justification, Injection | None]:
    """``justification(purpose)`` and ``find_injection(purpose, *others)``, folding the
    purpose once.

    Folding works line by line (normalisation, case and accents never reach across a line
    break, nor do runs of spaces), so the folded lines can be joined instead of folding the
    joined lines again -- except that a line starting with combining marks loses them after
    a line break, which an ASCII line (a vendor, a cost center, most often) never does.
    """
    folded = fold(purpose)
    rest = [t for t in others if t]
    if purpose and all(t.isascii() for t in rest):
        joined = "\n".join([folded, *map(fold, rest)])
    else:
        joined = fold("\n".join(t for t in (purpose, *others) if t))
    return _justification(folded), _injection(joined)


def _injection(text: str) -> Injection | None:
    if not text.strip():
        return None
    gates = _gates()
    words = words_of(text)  # most texts hold no word a pattern needs: no search then
    strong = gates.strong.search(text, words)
    if strong:
        return Injection("gives the advisor instructions", (_quote(text, strong),))
    addressed = gates.vocative.search(text, words)
    verdict = gates.verdict.search(text, words)
    skip = gates.skip.search(text, words)
    if addressed:
        order = verdict or skip or gates.instruct.search(text, words, addressed.end())
        if order:
            return Injection("addresses the advisor or the approvers with an order",
                             (_quote(text, addressed), _quote(text, order)))
    if verdict and skip:
        return Injection("asks for approval without scrutiny",
                         (_quote(text, verdict), _quote(text, skip)))
    return None


# ---------------------------------------------------------------- justification vocabulary

def _wordset(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words that carry no "what" on their own: articles, pronouns, prepositions, fillers.
_STOP = _wordset("""
a an the and or of in on at to by from with my our your their his her its this that these
those it is are be was were we i me us you they some any all few more per via new also etc
der die das den dem des ein eine einen einem einer und oder mit von zu zum zur im in am auf
aus bei fur mein meine unser unsere ist sind wir ich es
le la les un une des du de et ou avec au aux en sur mon ma mes notre nos est sont nous je
el los las uno una unos unas y o con del al en mi mis nuestro nuestra es son para
il lo gli i un una e con di da nel nella mio mia nostro nostra
o os as um uma e com do da dos das no na meu minha nosso nossa
het een en of met van voor mijn onze is zijn
for because since so due weil damit um da pour car parce afin porque por per perche poiche
pois omdat zodat ter
""")
# Words too vague to say what is bought, or that say nothing at all.
_VAGUE = _wordset("""
stuff thing things item items misc miscellaneous various sundry sundries other others
general purchase purchases order orders buy buying bought expense expenses cost costs
payment payments invoice invoices bill bills request requests need needs needed urgent
asap please pls approve approval pay tbd tba na n/a see attached attachment discussed
discussed ticket test testing asdf qwerty xxx foo bar budget spend spending money
reimbursement something anything whatever same usual regular
sachen sache zeug dinge ding diverses divers verschiedenes sonstiges artikel einkauf
bestellung kauf kosten rechnung zahlung bitte dringend genehmigen siehe anhang besprochen
wie ausgaben
trucs truc choses chose diverses articles achat achats commande depenses frais facture
paiement svp stp merci voir piece jointe convenu
cosas cosa varios varias articulos compra compras pedido gastos factura pago urgente
favor ver adjunto hablado
cose varie vari articoli acquisto ordine spese fattura pagamento
coisas coisa diversos itens despesas fatura
spullen dingen diversen aankoop bestelling kosten factuur betaling
""")
# Words that say why (a purpose, a cause, a replacement).
_WHY = _wordset("""
for because since so to due needed required replace replacement replacing broken repair
fix support onboarding hires hire renewal renew upgrade
fur weil damit um zum zur wegen da ersatz ersetzen defekt
pour car parce afin remplacement remplacer casse destine
para porque por debido reemplazo reemplazar sustituir roto
per perche poiche sostituire sostituzione rotto
porque pois substituir substituicao quebrado
voor omdat zodat ter vervanging vervangen kapot
""")
_CJK = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af]+")
_CJK_WHY = re.compile(r"为了|為了|用于|用於|因为|因為|ため|のため|위해|때문")
_TOKEN = re.compile(r"[^\W\d_](?:[\w'’-]*\w)?")


@dataclass(frozen=True, slots=True)
class Justification:
    """What a purpose says: its content words, and whether it says why."""

    content: tuple[str, ...]
    says_why: bool

    @property
    def enough(self) -> bool:
        # "Laptops for new hires" (what + why) or a plain but specific description
        # ("Adobe Creative Cloud licenses, design team"); never one vague word
        return len(self.content) >= (2 if self.says_why else 3)


def _mashed(word: str) -> bool:
    """Keyboard mash or filler: ``sdfgh``, ``xxxx``, ``aaaa``."""
    if len(set(word)) == 1 and len(word) > 1:
        return True
    return word.isascii() and len(word) >= 4 and _VOWELS.isdisjoint(word)


_VOWELS = frozenset("aeiouy")
_JOINERS = re.compile(r"[-']")
_STOP_OR_VAGUE = _STOP | _VAGUE


def justification(purpose: str) -> Justification:
    return _justification(fold(purpose))


def _justification(text: str) -> Justification:
    content: list[str] = []
    why = False
    if not text.isascii():  # Chinese, Japanese and Korean are never ASCII
        why = bool(_CJK_WHY.search(text))
        for run in _CJK.findall(text):
            if re.match(r"[\uac00-\ud7af]", run):
                content.append(run)  # Korean separates words with spaces
            else:
                content.extend(run[i:i + 2] for i in range(0, len(run), 2))
        text = _CJK.sub(" ", text)
    # a token starts with a letter and ends with a word character: no "'’-" to strip
    words = _TOKEN.findall(text)
    why = why or not _WHY.isdisjoint(words) or any(
        not _WHY.isdisjoint(_JOINERS.split(w)) for w in words if "-" in w or "'" in w)
    content += [w for w in words if len(w) > 1 and w not in _STOP_OR_VAGUE and not _mashed(w)]
    return Justification(tuple(content), why)


def missing_justification(purpose: str) -> bool:
    """True when the purpose does not say what is bought and why."""
    return not justification(purpose).enough
