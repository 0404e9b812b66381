"""The customer file (客户档案) as pure data and the rules that fold events into it.

No I/O here. Every fold is order-independent: sums and counts commute, first/last purchase are
min/max of event time, and a profile trait or consent keeps the value with the latest
``occurred_at``. So late and out-of-order events give the same file as in-order ones.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import Decimal
from typing import Any

from shared.contracts import (
    ConsentPayload,
    CustomerSnapshot,
    InteractionPayload,
    Traits,
)

SNAPSHOT_TRAITS = (
    "name",
    "first_name",
    "email",
    "phone",
    "locale",
    "timezone",
    "birthday",
    "lunar_birthday",
    "signup_at",
    "communication_style",
    "account_id",
)


@dataclass(frozen=True)
class PurchaseTotals:
    order_count: int = 0
    revenue: Decimal = Decimal(0)
    refunded: Decimal = Decimal(0)
    first_purchase_at: datetime | None = None
    last_purchase_at: datetime | None = None

    @property
    def net_revenue(self) -> Decimal:
        return self.revenue - self.refunded

    @property
    def average_order_value(self) -> Decimal | None:
        if not self.order_count:
            return None
        return (self.revenue / self.order_count).quantize(Decimal("0.01"))


def add_purchase(totals: PurchaseTotals, amount: Decimal, at: datetime) -> PurchaseTotals:
    return replace(
        totals,
        order_count=totals.order_count + 1,
        revenue=totals.revenue + amount,
        first_purchase_at=min(totals.first_purchase_at or at, at),
        last_purchase_at=max(totals.last_purchase_at or at, at),
    )


def add_refund(totals: PurchaseTotals, amount: Decimal) -> PurchaseTotals:
    return replace(totals, refunded=totals.refunded + amount)


@dataclass(frozen=True)
class Stamped:
    """A value with the event time that set it, so the latest event wins whatever the arrival order."""

    value: Any
    at: str  # ISO-8601, UTC

    def as_json(self) -> dict[str, Any]:
        return {"value": self.value, "at": self.at}


def _stamp(at: datetime) -> str:
    return at.isoformat()


def _newer(current: dict[str, Any] | None, at: datetime) -> bool:
    return current is None or datetime.fromisoformat(current["at"]) <= at


def merge_traits(profile: dict[str, dict[str, Any]], traits: Traits, at: datetime) -> dict[str, dict[str, Any]]:
    """Latest-wins merge of the traits an identify carries (absent traits leave the file alone)."""
    merged = dict(profile)
    given = traits.model_dump(mode="json", exclude_none=True, exclude={"custom"})
    given.update({f"custom.{k}": v for k, v in traits.custom.items()})
    for name, value in given.items():
        if _newer(merged.get(name), at):
            merged[name] = Stamped(value, _stamp(at)).as_json()
    return merged


def merge_consent(
    consents: dict[str, dict[str, Any]], consent: ConsentPayload, at: datetime
) -> dict[str, dict[str, Any]]:
    merged = dict(consents)
    channels = ["email", "sms", "push", "webhook"] if consent.channel == "all" else [str(consent.channel)]
    for channel in channels:
        key = f"{channel}:{consent.purpose}"
        if _newer(merged.get(key), at):
            merged[key] = Stamped(consent.granted, _stamp(at)).as_json()
    return merged


def count_interaction(counts: dict[str, int], interaction: InteractionPayload) -> dict[str, int]:
    merged = dict(counts)
    merged[str(interaction.kind)] = merged.get(str(interaction.kind), 0) + 1
    return merged


def trait(profile: dict[str, dict[str, Any]], name: str) -> Any:
    entry = profile.get(name)
    return entry["value"] if entry else None


def display_name(profile: dict[str, dict[str, Any]]) -> str | None:
    name = trait(profile, "name")
    if name:
        return str(name)
    parts = [trait(profile, "first_name"), trait(profile, "last_name")]
    joined = " ".join(str(p) for p in parts if p)
    return joined or None


@dataclass(frozen=True)
class CustomerFile:
    customer_id: str
    version: int = 0
    profile: dict[str, dict[str, Any]] = field(default_factory=dict)
    consents: dict[str, dict[str, Any]] = field(default_factory=dict)
    interactions: dict[str, int] = field(default_factory=dict)
    totals: PurchaseTotals = field(default_factory=PurchaseTotals)

    def snapshot(self) -> CustomerSnapshot:
        values = {name: trait(self.profile, name) for name in SNAPSHOT_TRAITS}
        values["name"] = display_name(self.profile)
        return CustomerSnapshot(
            **values,
            consents={key: bool(entry["value"]) for key, entry in self.consents.items()},
            order_count=self.totals.order_count,
            revenue=self.totals.revenue,
            first_purchase_at=self.totals.first_purchase_at,
            last_purchase_at=self.totals.last_purchase_at,
        )
