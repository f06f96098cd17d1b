"""World-model fidelity: how close the observations a model writes itself are to the real search's.

One ``Call`` per search call the model made while writing its own observations (``tools="simulated"``,
as in RL-1): the documents it wrote for the query, and the documents the real searcher returns for the
same query. Over all calls (every function is pure; the driver is ``evaluate.fidelity``):

  in_document_form   share of calls whose written observation holds at least one document in the format's
                     document form (``FormatPreset.documents``); the rest are free text (prose about the
                     query), compared with the real observation as text only
  titles_in_corpus   share of written documents whose title is a corpus title
  titles_in_topk     share of written documents whose title is among the real top-k titles of that query
  gold_in_written    share of calls whose written observation holds a gold answer (word-bounded, normalised)
  gold_in_real       the same for the real observation of the same query
  observation_f1     mean token F1 (``coa.score.f1``, SQuAD-normalised tokens) between the written and the
                     real observation text (documents' titles and texts, in order, joined by newlines; a
                     written observation in free text: its text between the tags)
  hallucination      share of written documents that are hallucinated: the title is not a corpus title,
                     or the text is not *supported* by that title's real paragraph

*Supported*: at least ``threshold`` (default 0.5) of the written text's normalised tokens (SQuAD
normalisation, counted with multiplicity) occur in the title's real corpus paragraph:
``|tokens(written) ∩ tokens(real)| / |tokens(written)| >= threshold`` (multiset intersection). A written
text with no tokens asserts nothing and is supported. Where several corpus paragraphs share a title, the
best supported one counts.

Each rate is ``{"rate": r in [0, 1] or None, "n": its denominator}``; n = 0 gives ``rate`` None (a model
that never searches writes n = 0, with a note, and nothing is divided by zero).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Iterable, Sequence

from coa.score import f1, normalize_answer
from coa.search.types import Doc
from evaluate.stats import gold_in_passages


@dataclass
class Call:
    """One search call: the documents the model wrote and the real search's documents, as (title, text)."""

    query: str
    written: list[tuple[str, str]]
    real: list[tuple[str, str]]
    golds: list[str] = field(default_factory=list)
    written_text: str = ""  # the written observation between its tags (what counts when it holds no document)

    @property
    def written_observation(self) -> str:
        return observation_text(self.written) if self.written else self.written_text


def title_key(title: str) -> str:
    return " ".join(title.casefold().split())


def corpus_store(contents: Iterable[str]) -> dict[str, list[str]]:
    """Title key → the texts of every corpus paragraph with that title, from FlashRAG ``"Title"\\ntext`` rows."""

    store: dict[str, list[str]] = {}
    for c in contents:
        doc = Doc(id="", contents=c)
        store.setdefault(title_key(doc.title), []).append(doc.text)
    return store


def containment(written: str, real: str) -> float:
    """Share of the written text's normalised tokens (with multiplicity) found in the real text; 1 if none."""
    w = Counter(normalize_answer(written).split())
    if not w:
        return 1.0
    return sum((w & Counter(normalize_answer(real).split())).values()) / sum(w.values())


def hallucinated(title: str, text: str, store: dict[str, list[str]], threshold: float = 0.5) -> bool:
    """The title is not in the corpus, or no paragraph of that title supports the text (module docstring)."""
    real = store.get(title_key(title))
    return not real or max(containment(text, r) for r in real) < threshold


def observation_text(docs: Sequence[tuple[str, str]]) -> str:
    return "\n".join(f"{title}\n{text}" for title, text in docs)


def rate(hits: Sequence[bool]) -> dict:
    return {"rate": round(sum(hits) / len(hits), 4) if hits else None, "n": len(hits)}


def tool_fidelity(written: Sequence[str], real: Sequence[str | None], golds: Sequence[Sequence[str]]) -> dict:
    """A non-search tool's fidelity: the result bodies the policy wrote against what the real tool returned for
    the same arguments (None: the real tool refused the call; those count as ``refused`` and are not compared).
    ``exact``: the two equal after answer normalisation (for ``python``: the output it predicted is the real
    one); ``result_f1``: token F1; ``gold_in_*``: a gold answer in the written / real result."""
    kept = [(w, r, g) for w, r, g in zip(written, real, golds, strict=True) if r is not None]
    f1s = [f1(w, r) for w, r, _ in kept]
    return {
        "calls": len(written),
        "refused": len(written) - len(kept),
        "exact": rate([normalize_answer(w) == normalize_answer(r) for w, r, _ in kept]),
        "result_f1": {"mean": round(sum(f1s) / len(f1s), 4) if f1s else None, "n": len(f1s)},
        "gold_in_written": rate([gold_in_passages([w], g) for w, _, g in kept]),
        "gold_in_real": rate([gold_in_passages([r], g) for _, r, g in kept]),
    }


def fidelity(
    calls: Sequence[Call], store: dict[str, list[str]], threshold: float = 0.5, search_calls: int | None = None
) -> dict:
    """Every rate of the module docstring over ``calls``; ``search_calls``: every search call the model
    wrote, with or without an observation of its own after it (None: not counted)."""
    written = [(c, title, text) for c in calls for title, text in c.written]
    f1s = [f1(c.written_observation, observation_text(c.real)) for c in calls]
    out = {
        "calls": len(calls),
        "written_documents": len(written),
        "in_document_form": rate([bool(c.written) for c in calls]),
        "titles_in_corpus": rate([title_key(t) in store for _, t, _ in written]),
        "titles_in_topk": rate([title_key(t) in {title_key(r) for r, _ in c.real} for c, t, _ in written]),
        "gold_in_written": rate([gold_in_passages([c.written_observation], c.golds) for c in calls]),
        "gold_in_real": rate([gold_in_passages([observation_text(c.real)], c.golds) for c in calls]),
        "observation_f1": {"mean": round(sum(f1s) / len(f1s), 4) if f1s else None, "n": len(f1s)},
        "hallucination": rate([hallucinated(t, x, store, threshold) for _, t, x in written]),
        "support_threshold": threshold,
    }
    if search_calls is not None:
        out["search_calls"] = search_calls
    if not calls:
        out["note"] = (
            "the model made no search call: every rate has n = 0"
            if not search_calls
            else f"the model made {search_calls} search calls and wrote no observation after any of them "
            "(no world model to compare): every rate has n = 0"
        )
    return out
