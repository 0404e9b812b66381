"""Versioned event contracts: the only shapes that travel between Huitou services.

Every message on a Huitou topic is an *envelope* (who, what, when, from where) around a typed
payload. The envelope's ``type`` picks the payload model, so one ``TypeAdapter`` validates any
event and tells the caller exactly which field is wrong.

Schema evolution: ``schema_version`` starts at 1. Additive, optional fields keep the version;
anything a consumer of version N could misread bumps it, and consumers keep accepting N-1 for one
release.
"""

from __future__ import annotations

import re
from datetime import date
from decimal import Decimal
from enum import StrEnum
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

SCHEMA_VERSION: Literal[1] = 1

Identifier = Annotated[str, Field(min_length=1, max_length=200, pattern=r"^\S(.*\S)?$")]
Money = Annotated[Decimal, Field(ge=0, max_digits=18, decimal_places=4)]
CurrencyCode = Annotated[str, Field(pattern=r"^[A-Z]{3}$", description="ISO 4217, e.g. CNY")]

_EMAIL = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")


def _known_zone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {value!r}; use an IANA name such as Asia/Shanghai") from None
    return value


TimeZoneName = Annotated[str, AfterValidator(_known_zone)]
"""An IANA time zone name (Asia/Shanghai), checked against the zone database."""


class Contract(BaseModel):
    """Base for all payloads: unknown fields are an error, so typos surface at the edge."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class Channel(StrEnum):
    EMAIL = "email"
    SMS = "sms"
    PUSH = "push"
    WEBHOOK = "webhook"


class Purpose(StrEnum):
    MARKETING = "marketing"
    TRANSACTIONAL = "transactional"


class CommunicationStyle(StrEnum):
    """[004]: the same care touch in a different tone."""

    FRIENDLY = "friendly"
    DOMINANT = "dominant"
    ANALYTICAL = "analytical"
    EXPRESSIVE = "expressive"


class Traits(Contract):
    """Profile traits carried by ``identify``; every field optional, unknown ones in ``custom``."""

    name: str | None = Field(None, max_length=200)
    first_name: str | None = Field(None, max_length=100)
    last_name: str | None = Field(None, max_length=100)
    email: str | None = Field(None, max_length=320)
    phone: str | None = Field(None, max_length=40)
    birthday: date | None = None
    lunar_birthday: str | None = Field(
        None, pattern=r"^\d{2}-\d{2}$", description="month-day in the lunar calendar, e.g. 08-15"
    )
    timezone: TimeZoneName | None = Field(None, max_length=64, description="IANA zone, e.g. Asia/Shanghai")
    locale: str | None = Field(None, pattern=r"^[a-z]{2}(-[A-Z]{2})?$", description="zh-CN or en")
    address: dict[str, str] | None = None
    signup_at: AwareDatetime | None = None
    communication_style: CommunicationStyle | None = None
    account_id: str | None = Field(None, max_length=200, description="B2B account this contact belongs to")
    custom: dict[str, Any] = Field(default_factory=dict)

    @field_validator("email")
    @classmethod
    def _email(cls, value: str | None) -> str | None:
        if value is not None and not _EMAIL.match(value):
            raise ValueError("email must look like name@example.com")
        return value.lower() if value else value


class IdentifyPayload(Contract):
    traits: Traits


class LineItem(Contract):
    sku: str | None = Field(None, max_length=200)
    name: str | None = Field(None, max_length=300)
    category: str | None = Field(None, max_length=200)
    quantity: int = Field(1, ge=1, le=1_000_000)
    price: Money | None = None


class PurchasePayload(Contract):
    order_id: Identifier
    amount: Money
    currency: CurrencyCode = "CNY"
    items: list[LineItem] = Field(default_factory=list, max_length=1000)
    margin: Decimal | None = Field(
        None, max_digits=18, decimal_places=4, description="gross margin of the order, when known"
    )
    share_of_wallet: float | None = Field(
        None, ge=0, le=1, description="our share of the customer's category spend, when the source knows it"
    )


class RefundPayload(Contract):
    order_id: Identifier
    refund_id: Identifier | None = Field(
        None, description="the shop's id for this refund: a refund resent under a new event id is then counted once"
    )
    amount: Money
    currency: CurrencyCode = "CNY"
    reason: str | None = Field(None, max_length=500)


class InteractionKind(StrEnum):
    VISIT = "visit"
    PAGE_VIEW = "page_view"
    PRODUCT_VIEWED = "product_viewed"
    EMAIL_OPEN = "email_open"
    EMAIL_CLICK = "email_click"
    SUPPORT_CONTACT = "support_contact"
    FEEDBACK = "feedback"
    COMPLAINT = "complaint"
    COMPLAINT_RESOLVED = "complaint_resolved"
    REFERRAL = "referral"
    OTHER = "other"


class ChurnReason(StrEnum):
    """Churn reasons worth coding [001 L421]."""

    PRICE = "price"
    INCONVENIENCE = "inconvenience"
    PRODUCT_QUALITY = "product_quality"
    STAFF_SERVICE = "staff_service"
    POOR_RECOVERY = "poor_recovery"
    ETHICS = "ethics"
    CUSTOMER_SIDE = "customer_side"
    COMPETITOR = "competitor"


class InteractionPayload(Contract):
    kind: InteractionKind
    name: str | None = Field(None, max_length=200, description="original event name, e.g. a Segment track name")
    rating: int | None = Field(None, ge=1, le=5, description="feedback rating, 1 (worst) to 5")
    complaint_id: str | None = Field(None, max_length=200)
    text: str | None = Field(None, max_length=10_000)
    churn_reason: ChurnReason | None = None
    referred_customer_id: str | None = Field(None, max_length=200)
    touch_id: str | None = Field(None, max_length=200, description="the care touch this reacts to")
    properties: dict[str, Any] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _kind_needs(self) -> InteractionPayload:
        if self.kind is InteractionKind.FEEDBACK and self.rating is None:
            raise ValueError("a feedback interaction needs a rating from 1 to 5")
        if self.kind is InteractionKind.REFERRAL and not self.referred_customer_id:
            raise ValueError("a referral interaction needs referred_customer_id")
        if self.kind is InteractionKind.COMPLAINT_RESOLVED and not self.complaint_id:
            raise ValueError("complaint_resolved needs the complaint_id it resolves")
        return self


class ConsentPayload(Contract):
    channel: Channel | Literal["all"]
    purpose: Purpose
    granted: bool


class AliasPayload(Contract):
    """This customer was known under other customer ids before (Segment ``alias``, or an anonymous
    visitor who identified). Consumers may merge the files of those ids into this one."""

    previous_ids: list[Identifier] = Field(
        min_length=1,
        max_length=10,
        description="customer ids this customer may have been filed under before; merge the ones that exist",
    )


class TouchStatus(StrEnum):
    SCHEDULED = "scheduled"
    SUPPRESSED = "suppressed"
    SENT = "sent"
    FAILED = "failed"
    CANCELLED = "cancelled"
    CONVERTED = "converted"


class FieldChange(Contract):
    """One change in a customer file, with why it happened (tier, stage, churn band…).

    ``field`` names a CustomerSnapshot field (value_tier, grade, stage, churn_band, …), so
    outreach can trigger care plans on it.
    """

    field: str
    before: Any = None
    after: Any = None
    reason: str


class CustomerCause(Contract):
    """The event that made the customer file change."""

    event_id: str
    type: str
    occurred_at: AwareDatetime
    historical: bool = False
    order_id: str | None = None
    amount: Decimal | None = None
    interaction_kind: InteractionKind | None = None


class ValueTier(StrEnum):
    """Contribution tier by cumulative revenue (or margin) share — Pareto [002 L587]."""

    A = "A"
    B = "B"
    C = "C"
    D = "D"


class LifecycleStage(StrEnum):
    PROSPECT = "prospect"
    NEW = "new"
    ACTIVE = "active"
    AT_RISK = "at_risk"
    LAPSED = "lapsed"
    WON_BACK = "won_back"


class ChurnBand(StrEnum):
    """Probability of no purchase in the next 90 days: low < 33 %, medium 33–66 %, high > 66 %."""

    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class CustomerSnapshot(Contract):
    """Event-carried state: what downstream services may know about a customer file.

    Scoring owns every field; outreach keeps the latest snapshot per customer (by ``version``)
    and never asks scoring's database. Score fields are None until scoring has computed them.
    """

    # identity and contact
    name: str | None = None
    first_name: str | None = None
    email: str | None = None
    phone: str | None = None
    locale: str | None = None
    timezone: str | None = None
    birthday: date | None = None
    lunar_birthday: str | None = None
    signup_at: AwareDatetime | None = None
    communication_style: CommunicationStyle | None = None
    account_id: str | None = None
    consents: dict[str, bool] = Field(
        default_factory=dict, description='latest decision per "channel:purpose", e.g. "email:marketing"'
    )
    tags: list[str] = Field(default_factory=list)
    # purchase behaviour
    order_count: int = 0
    revenue: Decimal = Decimal(0)
    first_purchase_at: AwareDatetime | None = None
    last_purchase_at: AwareDatetime | None = None
    last_order_id: str | None = None
    last_order_amount: Decimal | None = None
    last_order_items: list[str] = Field(default_factory=list, description="item names of the last order")
    preferred_category: str | None = None
    referred_by: str | None = None
    # scores
    value_tier: ValueTier | None = None
    grade: str | None = Field(None, description="membership grade, e.g. vip / gold / silver / regular")
    stage: LifecycleStage | None = None
    churn_band: ChurnBand | None = None
    p_alive: float | None = Field(None, ge=0, le=1)
    expected_purchases_90d: float | None = None
    clv_365: Decimal | None = None
    expected_next_order_at: AwareDatetime | None = None
    relationship_type: str | None = Field(None, description="basic / reactive / accountable / proactive / partnership")
    prospect_grade: str | None = Field(None, description="A–D pipeline grade for prospects [004]")
    loyalty_quadrant: str | None = Field(None, description="destroyer / profit_seeker / captive / evangelist")
    satisfaction_level: int | None = Field(None, ge=0, le=3, description="behavioural level, DOMAIN.md §3")
    scores: dict[str, Any] = Field(default_factory=dict, description="further scores, free-form")


class CustomerUpdatedPayload(Contract):
    version: int = Field(ge=1, description="monotonic per customer file")
    cause: CustomerCause
    snapshot: CustomerSnapshot
    changes: list[FieldChange] = Field(default_factory=list)


class CustomerErasedPayload(Contract):
    reason: str = "erasure request"


class TouchPayload(Contract):
    touch_id: str
    plan: str
    status: TouchStatus
    channel: Channel | None = None
    due_at: AwareDatetime | None = None
    reason: str | None = None
    revenue: Decimal | None = None


class Envelope(BaseModel):
    """Fields every event carries, whatever its type."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Identifier = Field(description="unique per event; Segment messageId; replays are no-ops")
    customer_id: Identifier = Field(description="partition key: per-customer order holds")
    occurred_at: AwareDatetime = Field(description="event time, used for every computation")
    received_at: AwareDatetime | None = Field(None, description="set by ingest on acceptance")
    source: str = Field("api", min_length=1, max_length=100)
    schema_version: Literal[1] = SCHEMA_VERSION
    historical: bool = Field(False, description="backfilled: builds the file, never triggers a past-due touch")
    trace_id: str | None = Field(None, max_length=64)


class IdentifyEvent(Envelope):
    type: Literal["identify"] = "identify"
    payload: IdentifyPayload


class PurchaseEvent(Envelope):
    type: Literal["purchase"] = "purchase"
    payload: PurchasePayload


class RefundEvent(Envelope):
    type: Literal["refund"] = "refund"
    payload: RefundPayload


class InteractionEvent(Envelope):
    type: Literal["interaction"] = "interaction"
    payload: InteractionPayload


class ConsentEvent(Envelope):
    type: Literal["consent"] = "consent"
    payload: ConsentPayload


class AliasEvent(Envelope):
    type: Literal["alias"] = "alias"
    payload: AliasPayload


class CustomerUpdatedEvent(Envelope):
    type: Literal["customer.updated"] = "customer.updated"
    payload: CustomerUpdatedPayload


class CustomerErasedEvent(Envelope):
    type: Literal["customer.erased"] = "customer.erased"
    payload: CustomerErasedPayload


class TouchEvent(Envelope):
    type: Literal["touch"] = "touch"
    payload: TouchPayload


IntakeEvent = Annotated[
    IdentifyEvent | PurchaseEvent | RefundEvent | InteractionEvent | ConsentEvent | AliasEvent,
    Field(discriminator="type"),
]
"""What shops may send: the events on ``huitou.events``."""

AnyEvent = Annotated[
    IdentifyEvent
    | PurchaseEvent
    | RefundEvent
    | InteractionEvent
    | ConsentEvent
    | AliasEvent
    | CustomerUpdatedEvent
    | CustomerErasedEvent
    | TouchEvent,
    Field(discriminator="type"),
]

intake_adapter: TypeAdapter[IntakeEvent] = TypeAdapter(IntakeEvent)
any_event_adapter: TypeAdapter[AnyEvent] = TypeAdapter(AnyEvent)
INTAKE_TYPES = ("identify", "purchase", "refund", "interaction", "consent", "alias")
_EVENT_TYPES = {*INTAKE_TYPES, "customer.updated", "customer.erased", "touch"}


class ContractError(ValueError):
    """An event that does not match its contract, with one readable line per problem."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("; ".join(problems))


def explain(error: ValidationError) -> list[str]:
    """Turn pydantic errors into 'where: what to fix' lines a caller can act on."""
    lines = []
    for item in error.errors(include_url=False):
        loc = list(item["loc"])
        if loc and isinstance(loc[0], str) and loc[0] in _EVENT_TYPES:
            loc = loc[1:]  # the union's tag (the event type) says nothing the caller doesn't know
        where = ".".join(str(part) for part in loc) or "body"
        message = item["msg"].removeprefix("Value error, ")
        lines.append(f"{where}: {message}")
    return lines


# The adapter's core validator, called directly: ingest validates every event it accepts, and
# TypeAdapter.validate_python's Python-level wrapper costs about a tenth of the validation itself.
_validate_intake = intake_adapter.validator.validate_python


def parse_intake(data: Any) -> IntakeEvent:
    """Validate one intake event from decoded JSON; raises ContractError."""
    if isinstance(data, dict) and data.get("type") not in INTAKE_TYPES:
        raise ContractError([f"type: must be one of {', '.join(INTAKE_TYPES)}; got {data.get('type')!r}"])
    try:
        event: IntakeEvent = _validate_intake(data)
    except ValidationError as error:
        raise ContractError(explain(error)) from None
    return event


def parse_event(raw: bytes | str) -> AnyEvent:
    """Validate any Huitou event from its JSON wire form; raises ContractError."""
    try:
        return any_event_adapter.validate_json(raw)
    except ValidationError as error:
        raise ContractError(explain(error)) from None


def to_wire(event: BaseModel) -> bytes:
    """The event's JSON wire form (every field, nulls included): the bytes ``model_dump_json``
    would give, straight from pydantic-core's serializer, without the text round trip."""
    return event.__pydantic_serializer__.to_json(event)
