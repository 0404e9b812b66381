"""Templates and rendering (pure): sandboxed Jinja2 per locale, with a tone variant per
communication style [004], and the context every template sees.

A template error never sends a broken message: rendering is strict (an unknown variable is an
error, not an empty string) and any failure raises ``RenderError``, which fails the touch
visibly instead of sending it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml
from jinja2 import StrictUndefined, Template, TemplateError
from jinja2.sandbox import ImmutableSandboxedEnvironment
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from services.outreach.plans import PLAN_NAME, OfferTerms, PlanError
from shared.contracts import Channel, CommunicationStyle, CustomerSnapshot, explain

SUPPORTED_LOCALES = ("zh-CN", "en")
LOCALE = r"^[a-z]{2}(-[A-Z]{2})?$"


class Content(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: str = Field("", max_length=1000, description="email subject (ignored by SMS and push)")
    body: str = Field(min_length=1, max_length=20_000)


class LocaleTemplate(Content):
    tones: dict[CommunicationStyle, Content] = Field(
        default_factory=dict, description="the same touch in another tone, by communication style"
    )


class TemplateSpec(BaseModel):
    """One template: its text per locale."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=PLAN_NAME)
    locales: dict[str, LocaleTemplate] = Field(min_length=1)


class TemplateFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    templates: dict[str, dict[str, LocaleTemplate]]


def load_template_file(path: Path) -> list[TemplateSpec]:
    try:
        data = TemplateFile.model_validate(yaml.safe_load(path.read_text(encoding="utf-8")))
        return [TemplateSpec(name=name, locales=locales) for name, locales in data.templates.items()]
    except (OSError, yaml.YAMLError) as error:
        raise PlanError([f"{path}: {error}"]) from None
    except ValidationError as error:
        raise PlanError([f"{path}: {line}" for line in explain(error)]) from None


class RenderError(ValueError):
    """The template could not produce a message; the touch fails instead of sending garbage."""


_ENV = ImmutableSandboxedEnvironment(undefined=StrictUndefined, autoescape=False, keep_trailing_newline=False)


@lru_cache(maxsize=1024)
def _compiled(source: str) -> Template:
    """Compiling is the costly part of rendering; a template's text compiles once per process."""
    return _ENV.from_string(source)


def check_syntax(template: TemplateSpec) -> list[str]:
    """Problems an operator must fix before saving (syntax only; variables are checked at preview)."""
    problems: list[str] = []
    for locale, content in template.locales.items():
        variants: list[tuple[str, Content]] = [("", content), *((f".tones.{t}", c) for t, c in content.tones.items())]
        for where, variant in variants:
            for part in ("subject", "body"):
                try:
                    _ENV.parse(getattr(variant, part))
                except TemplateError as error:
                    problems.append(f"locales.{locale}{where}.{part}: {error}")
    return problems


def pick_locale(wanted: str | None, available: Mapping[str, Any], default: str) -> str:
    """The customer's locale, else its language ('en-US' → 'en'), else the default, else any."""
    for candidate in (wanted, (wanted or "").split("-")[0], default, default.split("-")[0]):
        if candidate and candidate in available:
            return candidate
    return next(iter(available))


@dataclass(frozen=True)
class Rendered:
    subject: str
    body: str
    locale: str
    tone: str | None


def render(
    template: TemplateSpec, context: Mapping[str, Any], *, locale: str | None, default_locale: str, tone: str | None
) -> Rendered:
    chosen = pick_locale(locale, template.locales, default_locale)
    content = template.locales[chosen]
    variant: Content = content
    used_tone = None
    if tone is not None:
        for style, candidate in content.tones.items():
            if style.value == tone:
                variant, used_tone = candidate, tone
    try:
        subject = _compiled(variant.subject).render(context).strip()
        body = _compiled(variant.body).render(context).strip()
    except TemplateError as error:
        raise RenderError(f"template {template.name} ({chosen}): {type(error).__name__}: {error}") from None
    except Exception as error:  # a filter on the wrong type, a division by zero in a template…
        raise RenderError(f"template {template.name} ({chosen}): {type(error).__name__}: {error}") from None
    if not body:
        raise RenderError(f"template {template.name} ({chosen}) rendered an empty body")
    return Rendered(subject, body, chosen, used_tone)


def build_context(
    *,
    customer_id: str,
    snapshot: CustomerSnapshot | None,
    locale: str,
    plan: str,
    channel: Channel | None,
    facts: Mapping[str, Any],
    offer: OfferTerms | None,
    tier_benefits: Mapping[str, Mapping[str, str]],
    unsubscribe_url: str | None,
) -> dict[str, Any]:
    """What every template may use. Values are plain data (no objects with methods to call)."""
    s = snapshot or CustomerSnapshot()
    display = s.first_name or s.name
    tier = s.value_tier.value if s.value_tier else None
    benefits = tier_benefits.get(tier or "", {})
    language = locale.split("-")[0]
    return {
        "customer": {
            "id": customer_id,
            "name": s.name,
            "first_name": s.first_name,
            "display_name": display,
            "tier": tier,
            "grade": s.grade,
            "stage": s.stage.value if s.stage else None,
            "order_count": s.order_count,
            "preferred_category": s.preferred_category,
            "communication_style": s.communication_style.value if s.communication_style else None,
            "tags": list(s.tags),
        },
        "last_purchase": {
            "order_id": s.last_order_id,
            "amount": _money(s.last_order_amount),
            "items": list(s.last_order_items),
            "at": s.last_purchase_at.isoformat() if s.last_purchase_at else None,
        }
        if s.last_purchase_at or s.last_order_id or s.last_order_items
        else None,
        "preferred_category": s.preferred_category,
        "tier": tier,
        "tier_benefits": benefits.get(locale) or benefits.get(language) or None,
        "offer": {
            "code": offer.code,
            "value": _money(offer.value),
            "description": offer.description.get(locale) or offer.description.get(language) or "",
        }
        if offer
        else None,
        "tone": s.communication_style.value if s.communication_style else None,
        "plan": plan,
        "channel": channel.value if channel else None,
        "locale": locale,
        "unsubscribe_url": unsubscribe_url,
        **{k: v for k, v in facts.items() if k not in {"customer", "offer", "plan"}},
    }


def _money(value: Decimal | None) -> str | None:
    return None if value is None else f"{value.quantize(Decimal('0.01'))}"
