"""The deterministic, catalog-grounded teacher: every task answered from the prompt's context and the catalog.

It makes the whole teacher pipeline run offline and in CI, and it is the baseline an LLM teacher
has to beat. It reads what an LLM would read: :meth:`CatalogTeacher.answer` decodes the
``<context>`` block of the rendered prompt (so no side channel between the context builder and
the backend is needed), then answers with the catalog's lexicons, stored embeddings and Open Food
Facts terms. :meth:`CatalogTeacher.answer_with_context` renders the prompt first and goes the same
way, so both entry points give the same answer. Same prompt, same catalog: same answer, byte for byte.
"""

from __future__ import annotations

import re
from typing import Any

import orjson

from services.catalog.artifacts import Catalog
from services.catalog.lexicons import plural_variants
from services.catalog.model import CategoryPath
from services.catalog.retrieval import CatalogRetriever
from services.domain import Role, Tag
from services.normalize import normalize_query
from services.tagging.lexicon_tagger import LexiconTagger
from services.teacher.backend import TeacherAnswer, Usage, parse_answer
from services.teacher.context import trigram_jaccard
from services.teacher.context_types import (
    AttributeCandidate,
    BrandCandidate,
    BrandSource,
    CategoryCandidate,
    TaskName,
    TeacherContext,
)
from services.teacher.prompts import RenderedPrompt, template_for
from services.teacher.prompts.answers import MAX_CATEGORIES, MAX_REWRITES
from services.teacher.prompts.base import CONTEXT_TAG, ContextSlot

__all__ = ["CatalogTeacher", "context_from_prompt"]

TEACHER_NAME = "catalog-teacher"
TEACHER_VERSION = "v2"  # bump when a rule below changes an answer
# A brand the lexicon did not tag is added to SRL only when retrieval was this sure and a span of the
# query is spelled like it (so "verdant machine" never becomes Velveeta: close by meaning, not by spelling).
BRAND_MIN_SCORE = 0.6
BRAND_MIN_SPAN_SIMILARITY = 0.5
# Spelled numbers restate "1%" or "2 lb": search already matches them, they retrieve nothing new.
_NUMBER_WORDS = re.compile(
    r"\b(?:zero|one|two|three|four|five|six|seven|eight|nine|ten|twelve|hundred|percent|half|quarter|dozen)\b"
)
# Substitute ranking: cosine of stored product-type vectors, plus a bonus for the query type's own aisle and
# a penalty for narrower variants; below the floor a type shares an aisle, not a need.
_HOME_BONUS = 0.15
_NARROWER_PENALTY = 0.1
_MIN_TYPE_SIMILARITY = 0.3
_MIN_HOME_SHARE = 0.2
_BLOCK = re.compile(rf"^<{CONTEXT_TAG}>\n(.*?)\n</{CONTEXT_TAG}>$", re.S | re.M)


def context_from_prompt(prompt: RenderedPrompt) -> TeacherContext:
    """The :class:`TeacherContext` a rendered prompt shows (only the slots its template renders)."""
    user = next((m["content"] for m in prompt.messages if m["role"] == "user"), "")
    found = _BLOCK.search(user)
    blocks: dict[str, Any] = orjson.loads(found.group(1)) if found else {}
    brands = tuple(
        BrandCandidate(str(b["brand"]), float(b["score"]), _source(str(b["why"])))
        for b in blocks.get(ContextSlot.BRANDS.value, [])
    )
    categories = tuple(
        CategoryCandidate(tuple(c["path"]), int(c["conversions"]), float(c["score"]))
        for c in blocks.get(ContextSlot.CATEGORIES.value, [])
    )
    attributes = tuple(
        AttributeCandidate(str(a["value"]), str(a["kind"])) for a in blocks.get(ContextSlot.ATTRIBUTES.value, [])
    )
    return TeacherContext(
        normalized_query=prompt.query,
        brands=brands,
        categories=categories,
        product_types=tuple(str(t) for t in blocks.get(ContextSlot.PRODUCT_TYPES.value, [])),
        attributes=attributes,
        session_followups=tuple(str(s) for s in blocks.get(ContextSlot.SESSION_FOLLOWUPS.value, [])),
    )


def _source(why: str) -> BrandSource:
    # The prompt renders the reason in words for the model; map them back to the source.
    return "conversions" if "conversion" in why else "string" if "spelled" in why else "embedding"


class CatalogTeacher:
    """:class:`~services.teacher.backend.TeacherBackend` that answers from the context and the catalog alone."""

    name = TEACHER_NAME

    def __init__(self, catalog: Catalog) -> None:
        self.catalog = catalog
        self.tagger = LexiconTagger(catalog)
        self.version = f"{TEACHER_VERSION}+catalog.{catalog.manifest.get('build') or 'unsaved'}"
        self.retriever = CatalogRetriever(catalog.products)

    async def answer(self, task: TaskName, prompt: RenderedPrompt) -> TeacherAnswer:
        context = context_from_prompt(prompt)
        reasoning, answer = self.solve(task, context)
        data, reasoning = parse_answer(task, {"reasoning": reasoning, "answer": answer}, prompt)
        return TeacherAnswer(task, data, reasoning, Usage(), 0.0, self.name, self.version)

    async def answer_with_context(self, task: TaskName, context: TeacherContext) -> TeacherAnswer:
        """Render the task's prompt for ``context`` and answer it (the same answer :meth:`answer` gives)."""
        return await self.answer(task, template_for(task).render(context.normalized_query, context))

    def solve(self, task: TaskName, context: TeacherContext) -> tuple[str, dict[str, Any]]:
        """``(reasoning, answer)`` for ``task``, before validation."""
        query = context.normalized_query
        tags, note = self._tags(query, context)
        if task is TaskName.SRL:
            return self._srl(tags, note)
        if task is TaskName.CATEGORY:
            return self._category(tags, context)
        product = next((t for t in reversed(tags) if t.role is Role.PRODUCT), None)
        if task is TaskName.SUBSTITUTES:
            found = self._substitutes(query, tags, product, context)
        elif task is TaskName.BROADER:
            found = self._broader(query, tags, product, context)
        else:
            found = self._synonyms(query, product)
        kept = _useful(query, self._discoverable(task, found, context))
        why = f"product type {product.canonical!r}" if product else "no product type tagged"
        return f"{task.value} from the catalog for {why}; kept {len(kept)} of {len(found)}.", {"rewrites": kept}

    def _discoverable(self, task: TaskName, candidates: list[str], context: TeacherContext) -> list[str]:
        """Candidates a search would find products for; for substitutes and broader queries, those whose
        products sit where shoppers converted after this query first (the others only when none does).

        The search is the catalog keyword search the guardrails and ``qu eval`` use: a rewrite that finds
        nothing is useless for discovery, whatever it means.
        """
        found = [c for c in candidates if self.retriever.products(c)]
        if task is TaskName.SYNONYMS:
            return found
        converted = {c.path for c in context.categories if c.conversions}
        target = converted or {c.path for c in context.categories}
        landing = [c for c in found if self.retriever.categories(c) & target]
        return landing or found

    # --- srl --------------------------------------------------------------------------------------

    def _tags(self, query: str, context: TeacherContext) -> tuple[list[Tag], str]:
        """The lexicon's tags, plus the top retrieved brand when the lexicon missed it ("pepridge farm").

        Every task reads these, so a misspelled brand-only query gets the brand's categories,
        other brands as substitutes, and so on, not only a brand tag.
        """
        tags = self.tagger.tag(query)
        note = f"lexicon tagged {len(tags)} span(s)"
        top = context.brands[0] if context.brands else None
        if top is not None and top.score >= BRAND_MIN_SCORE and not any(t.role is Role.BRAND for t in tags):
            span = self._brand_span(query, top.brand)
            if span is not None and not any(t.start < span[1] and span[0] < t.end for t in tags):
                tags = sorted(
                    [*tags, Tag(Role.BRAND, *span, query[span[0] : span[1]], top.brand)], key=lambda t: t.start
                )
                note += f"; brand {top.brand!r} retrieved by {top.source} ({top.score:.2f}), spelled like the query"
        return tags, note

    @staticmethod
    def _srl(tags: list[Tag], note: str) -> tuple[str, dict[str, Any]]:
        out = [
            {"role": t.role.value, "start": t.start, "end": t.end, "text": t.text, "canonical": t.canonical}
            for t in tags
        ]
        return note + ".", {"tags": out}

    def _brand_span(self, query: str, brand: str) -> tuple[int, int] | None:
        """The word span of ``query`` spelled most like one of the brand's aliases, if close enough."""
        entry = self.catalog.brands.lookup(brand)
        aliases = (entry.key, *entry.aliases) if entry else (normalize_query(brand),)
        words = [(m.start(), m.end()) for m in re.finditer(r"\S+", query)]
        best: tuple[float, int, int] | None = None
        for i in range(len(words)):
            for j in range(i, min(i + 3, len(words))):
                start, end = words[i][0], words[j][1]
                score = max(trigram_jaccard(query[start:end], a) for a in aliases)
                if best is None or score > best[0]:
                    best = (score, start, end)
        return (best[1], best[2]) if best is not None and best[0] >= BRAND_MIN_SPAN_SIMILARITY else None

    # --- category ---------------------------------------------------------------------------------

    def _category(self, tags: list[Tag], context: TeacherContext) -> tuple[str, dict[str, Any]]:
        """Conversion share, cosine to the query and where the tagged type's products sit, weighed together."""
        total = sum(c.conversions for c in context.categories)
        prior = self.tagger.category_prior(tags)
        scored = []
        for c in context.categories:
            share = prior.get(" > ".join(c.path), 0.0)
            if total:
                score = 0.5 * c.conversions / total + 0.3 * max(c.score, 0.0) + 0.2 * share
            else:
                score = 0.6 * max(c.score, 0.0) + 0.4 * share
            scored.append((round(min(max(score, 0.0), 1.0), 4), c.path))
        scored.sort(key=lambda s: (-s[0], s[1]))
        basis = f"{total} conversions" if total else "no conversions: similarity and catalog placement"
        answer = [{"path": list(path), "score": score} for score, path in scored[:MAX_CATEGORIES]]
        return f"Re-ranked {len(scored)} candidate paths by {basis}.", {"categories": answer}

    # --- rewrites ---------------------------------------------------------------------------------

    def _home(self, type_key: str, context: TeacherContext) -> list[CategoryPath]:
        """The type's categories, those the context ranks (conversions first) before the catalog's own order."""
        entry = self.catalog.types.entries.get(type_key)
        # A category holding a stray product of the type ("bread" in frozen doughs, 1 of 34) is not its home.
        own = [p for p, n in entry.top_categories() if n >= _MIN_HOME_SHARE * entry.product_count] if entry else []
        converted = [c.path for c in context.categories if c.conversions and len(c.path) > 1]
        ranked = [c.path for c in context.categories if c.path in own]
        return list(dict.fromkeys([*converted[:2], *ranked, *own]))

    def _substitutes(self, query: str, tags: list[Tag], product: Tag | None, context: TeacherContext) -> list[str]:
        """Types close to the query's type in meaning, its own aisle first; other brands for a brand-only query."""
        if product is None:
            brand = next((t for t in tags if t.role is Role.BRAND), None)
            return self._other_brands(brand.canonical) if brand is not None else []
        type_key = product.canonical
        homes = self._home(type_key, context)[:2]
        aisles = list(homes)
        for home in homes:  # neighbouring aisles: the rest of the department
            aisles += [n.path for n in self.catalog.taxonomy if n.path[:-1] == home[:-1] and n.is_leaf]
        candidates: dict[str, float] = {}
        for aisle in dict.fromkeys(aisles):
            for entry in self.catalog.types.entries.values():
                # Two products at least: a type one product name gave ("breeze") is too thin to search for.
                if entry.categories.get(aisle, 0) >= 2 and entry.key not in candidates:
                    candidates[entry.key] = _HOME_BONUS if aisle in homes else 0.0
        excluded = {type_key, *plural_variants(type_key)}
        head = _stem(type_key.split()[-1])
        keys = [
            k
            for k in sorted(candidates)  # sorted: the answer never depends on dict order
            if k not in excluded and self.catalog.attributes.lookup(k) is None  # "whole", "low": attribute words
        ]
        similarity = self._type_similarity(type_key, keys)
        for k in keys:
            # A narrower variant ("white bread" for "bread") retrieves a subset of what the query does.
            candidates[k] += similarity.get(k, 0.0) - (_NARROWER_PENALTY if _stem(k.split()[-1]) == head else 0.0)
        ranked = sorted(
            (k for k in keys if similarity.get(k, 1.0) >= _MIN_TYPE_SIMILARITY), key=lambda k: -candidates[k]
        )
        claims = [a.value for a in context.attributes if a.kind == "claim" and a.value in _tagged_attributes(tags)]
        prefix = " ".join(claims) + " " if claims else ""  # keep the dietary need: "gluten free bagels"
        return [prefix + k for k in ranked]

    def _type_similarity(self, type_key: str, keys: list[str]) -> dict[str, float]:
        """Cosine of the stored product-type vectors (no embedder needed); empty when the type has none."""
        stored = self.catalog.embeddings.product_types if self.catalog.embeddings else None
        if stored is None or type_key not in stored.keys:
            return {}
        row = {k: i for i, k in enumerate(stored.keys)}
        scores = stored.vectors @ stored.vectors[row[type_key]]
        return {k: float(scores[row[k]]) for k in keys if k in row}

    def _other_brands(self, brand: str) -> list[str]:
        """Brands whose products sit where this brand's do: what a shopper buys when the brand is missing."""
        entry = self.catalog.brands.lookup(brand)
        if entry is None:
            return []
        aisles = [p for p, _ in entry.top_categories(2)]
        others = [
            (sum(e.categories.get(a, 0) for a in aisles), e.canonical)
            for e in self.catalog.brands.entries.values()
            if e.key != entry.key and any(a in e.categories for a in aisles)
        ]
        return [name for _, name in sorted(others, key=lambda o: (-o[0], o[1]))]

    def _broader(self, query: str, tags: list[Tag], product: Tag | None, context: TeacherContext) -> list[str]:
        """Drop the brand, then the sizes, then all but the product; then the OFF broader term or the aisle."""
        out: list[str] = []
        brand = next((t for t in tags if t.role is Role.BRAND), None)
        # Package sizes go before the product does; a fat level ("2%") names a variant, it stays with the product.
        sizes = [
            a
            for a in tags
            if a.role is Role.ATTRIBUTE and _kind(context, a.canonical) == "size" and not a.canonical.endswith("%")
        ]
        brands = [brand] if brand else []
        for dropped in (brands, [*brands, *sizes]):
            if dropped and product is not None:
                out.append(_without(query, dropped))
        if product is not None:
            out.append(product.text)
            broader = [str(b) for b in self._terms(product.canonical, product.text).get("broader", [])]
            known = [b for b in broader if self._known(b)]
            home = self._home(product.canonical, context)[:1]
            # The aisle's name, or the department's when the aisle is named like the product ("bakery > bread").
            aisle = [p[-1] if _folded(p[-1]) != _folded(product.text) else p[0] for p in home]
            # An OFF term the catalog does not use ("dairies") only when nothing better is left.
            out += known + aisle + ([] if known or aisle else broader[:1])
        elif brand is not None:
            entry = self.catalog.brands.lookup(brand.canonical)
            out += [p[-1] for p, _ in entry.top_categories(2)] if entry else []
        else:
            out += [c.path[-1] for c in context.categories[:2]]
        return out

    def _synonyms(self, query: str, product: Tag | None) -> list[str]:
        """The product's Open Food Facts synonyms, put in place of its words (brand and attributes kept)."""
        if product is None:
            return []
        synonyms = [str(s) for s in self._terms(product.canonical, product.text).get("synonyms", [])]
        excluded = set(plural_variants(product.canonical)) | set(plural_variants(product.text))
        return [
            query[: product.start] + s + query[product.end :]
            for s in (normalize_query(s) for s in synonyms)
            if s and s not in excluded and not (set(plural_variants(s)) & excluded)
        ]

    def _terms(self, *names: str) -> dict[str, Any]:
        for name in names:
            for form in (name, *plural_variants(name)):
                found = self.catalog.category_terms.get(form)
                if isinstance(found, dict):
                    return found
        return {}

    def _known(self, term: str) -> bool:
        """Whether the catalog has something the term would retrieve: a product type or a category name."""
        key = normalize_query(term)
        return key in self.catalog.types or any(normalize_query(n.name) == key for n in self.catalog.taxonomy)


def _kind(context: TeacherContext, value: str) -> str:
    return next((a.kind for a in context.attributes if a.value == value), "other")


def _without(query: str, spans: list[Tag]) -> str:
    """The query with the spans' words removed."""
    kept = [ch for i, ch in enumerate(query) if not any(t.start <= i < t.end for t in spans)]
    return " ".join("".join(kept).split())


def _tagged_attributes(tags: list[Tag]) -> set[str]:
    return {t.canonical for t in tags if t.role is Role.ATTRIBUTE}


def _stem(word: str) -> str:
    return min(plural_variants(word), key=len)


def _useful(query: str, candidates: list[str]) -> list[dict[str, Any]]:
    """Distinct rewrites that retrieve something new, scored by rank: restatements never get through."""
    has_digit = any(ch.isdigit() for ch in query)
    seen = {_folded(query), _folded(query).replace(" ", "")}
    kept: list[dict[str, Any]] = []
    for candidate in candidates:
        text = normalize_query(candidate)
        folded = _folded(text)
        # "soymilk" and "soy milk" are one search too.
        if not text or {folded, folded.replace(" ", "")} & seen or (has_digit and _NUMBER_WORDS.search(text)):
            continue
        seen |= {folded, folded.replace(" ", "")}
        kept.append({"query": text, "score": round(max(0.9 - 0.1 * len(kept), 0.3), 2)})
        if len(kept) == MAX_REWRITES:
            break
    return kept


def _folded(text: str) -> str:
    """Plural-insensitive form: "organic banana" and "organic bananas" are one search."""
    return " ".join(_stem(w) for w in normalize_query(text).split())
