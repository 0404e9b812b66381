"""Loyalty, satisfaction and who the customer is to us (DOMAIN.md §2–3). Pure.

* Three loyalties kept apart [001 L477-478]: behavioural (buys again: repeat purchases, tenure,
  share of wallet where the source gives it), emotional (engagement with the brand: visits,
  opens, clicks, feedback, referrals) and intentional (says they will buy again: stated intent,
  else feedback ratings). The combined index is their weighted mean over the ones we can see.
* Satisfaction in behavioural levels [002 L743-747]: 1 satisfied, 2 … and buys again, 3 … and
  refers friends; 0 when not satisfied or no evidence yet.
* The satisfaction × loyalty quadrant [002 L759-785], the Kotler relationship type from the
  customer-count × margin matrix [000], and the A–D pipeline grade of prospects [004].
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from shared.contracts import InteractionKind

MarginClass = Literal["low", "medium", "high"]
SizeClass = Literal["many", "medium", "few"]

# How much each interaction says about attachment to the brand. Complaints and support contacts
# are service events, not attachment (a complaint is a signal for recovery, not disloyalty).
ENGAGEMENT_WEIGHTS: Mapping[str, float] = {
    InteractionKind.VISIT: 1.0,
    InteractionKind.PAGE_VIEW: 0.25,
    InteractionKind.PRODUCT_VIEWED: 0.5,
    InteractionKind.EMAIL_OPEN: 0.5,
    InteractionKind.EMAIL_CLICK: 1.0,
    InteractionKind.FEEDBACK: 2.0,
    InteractionKind.REFERRAL: 3.0,
}

# Kotler's matrix [000]: rows = number of customers, columns = margin per customer.
RELATIONSHIP_MATRIX: Mapping[tuple[SizeClass, MarginClass], str] = {
    ("many", "low"): "basic",
    ("many", "medium"): "reactive",
    ("many", "high"): "accountable",
    ("medium", "low"): "reactive",
    ("medium", "medium"): "accountable",
    ("medium", "high"): "proactive",
    ("few", "low"): "accountable",
    ("few", "medium"): "proactive",
    ("few", "high"): "partnership",
}


@dataclass(frozen=True)
class LoyaltyRules:
    repeat_target: int
    tenure_target_days: int
    engagement_half_saturation: float
    weights: tuple[float, float, float]
    """behavioural, emotional, intentional."""
    loyal_threshold: float
    satisfied_rating: int


@dataclass(frozen=True)
class Loyalty:
    behavioural: float | None
    emotional: float
    intentional: float | None
    index: float | None

    def as_json(self) -> dict[str, float | None]:
        return {
            "behavioural": self.behavioural,
            "emotional": self.emotional,
            "intentional": self.intentional,
            "index": self.index,
        }


def _round(value: float) -> float:
    return round(value, 2)


def behavioural_loyalty(
    repeat_purchases: int, tenure_days: int, share_of_wallet: float | None, rules: LoyaltyRules
) -> float:
    """0–100: mean of repeat purchases and tenure against their targets, and share of wallet when known."""
    parts = [
        min(repeat_purchases / rules.repeat_target, 1.0),
        min(max(tenure_days, 0) / rules.tenure_target_days, 1.0),
    ]
    if share_of_wallet is not None:
        parts.append(min(max(share_of_wallet, 0.0), 1.0))
    return _round(100 * sum(parts) / len(parts))


_REFERRAL_WEIGHT = ENGAGEMENT_WEIGHTS[InteractionKind.REFERRAL]


def engagement_count(interactions: Mapping[str, int], referrals: int) -> float:
    counted = sum([ENGAGEMENT_WEIGHTS.get(kind, 0.0) * n for kind, n in interactions.items() if kind != "referral"])
    return counted + _REFERRAL_WEIGHT * referrals


def emotional_loyalty(interactions: Mapping[str, int], referrals: int, rules: LoyaltyRules) -> float:
    """0–100, saturating: reaches 50 at ``engagement_half_saturation`` weighted interactions."""
    engagement = engagement_count(interactions, referrals)
    return _round(100 * engagement / (engagement + rules.engagement_half_saturation))


def intentional_loyalty(stated_intent: bool | None, mean_rating: float | None) -> float | None:
    """0–100 from what the customer says: a stated intent to buy again wins, else the mean rating."""
    if stated_intent is not None:
        return 100.0 if stated_intent else 0.0
    if mean_rating is None:
        return None
    return _round(100 * (mean_rating - 1) / 4)


def loyalty(
    *,
    repeat_purchases: int,
    tenure_days: int | None,
    share_of_wallet: float | None,
    interactions: Mapping[str, int],
    referrals: int,
    stated_intent: bool | None,
    mean_rating: float | None,
    rules: LoyaltyRules,
) -> Loyalty:
    behavioural = (
        None if tenure_days is None else behavioural_loyalty(repeat_purchases, tenure_days, share_of_wallet, rules)
    )
    emotional = emotional_loyalty(interactions, referrals, rules)
    intentional = intentional_loyalty(stated_intent, mean_rating)
    # The weighted mean over the loyalties we can see, summed in the same order as before
    # (behavioural, emotional, intentional) — without the generators, which cost more than the sums.
    total: float = 0  # an int start, as sum() has
    weighted_sum: float = 0
    for value, weight in zip((behavioural, emotional, intentional), rules.weights, strict=True):
        if value is not None and weight > 0:
            total += weight
            weighted_sum += value * weight
    index = _round(weighted_sum / total) if total else None
    return Loyalty(behavioural, emotional, intentional, index)


def satisfaction_level(
    *,
    latest_rating: int | None,
    open_complaints: int,
    repeat_purchases: int,
    referrals: int,
    has_purchased: bool,
    satisfied_rating: int,
) -> tuple[int | None, str]:
    """Behavioural level 0–3 and why. Satisfied = no open complaint and a latest rating at or above
    ``satisfied_rating`` (or, with no rating at all, having come back to buy again)."""
    if not has_purchased and latest_rating is None:
        return None, "no purchase or feedback yet"
    if open_complaints:
        return 0, f"{open_complaints} unresolved complaint(s)"
    if latest_rating is not None:
        if latest_rating < satisfied_rating:
            return 0, f"latest rating {latest_rating} below {satisfied_rating}"
        satisfied_by = f"latest rating {latest_rating}"
    elif repeat_purchases > 0:
        satisfied_by = "no rating, but came back to buy again"
    else:
        return 0, "no evidence of satisfaction yet"
    if repeat_purchases <= 0:
        return 1, f"satisfied ({satisfied_by})"
    if referrals <= 0:
        return 2, f"satisfied ({satisfied_by}) and buys again"
    return 3, f"satisfied ({satisfied_by}), buys again and refers friends"


def loyalty_quadrant(level: int | None, loyalty_index: float | None, loyal_threshold: float) -> str | None:
    """destroyer / profit_seeker / captive / evangelist [002 L759-785]."""
    if level is None or loyalty_index is None:
        return None
    satisfied = level >= 1
    loyal = loyalty_index >= loyal_threshold
    if satisfied and loyal:
        return "evangelist"
    if satisfied:
        return "profit_seeker"
    if loyal:
        return "captive"
    return "destroyer"


def size_class(population: int, few: int, many: int) -> SizeClass:
    if population >= many:
        return "many"
    if population <= few:
        return "few"
    return "medium"


def margin_class(value: float, low_cut: float, high_cut: float) -> MarginClass:
    if value >= high_cut and value > 0:
        return "high"
    if value < low_cut or value <= 0:
        return "low"
    return "medium"


def relationship_type(size: SizeClass, margin: MarginClass) -> str:
    """basic / reactive / accountable / proactive / partnership (Kotler [000])."""
    return RELATIONSHIP_MATRIX[(size, margin)]


PROSPECT_TAG_PREFIX = "prospect:"


def prospect_grade(
    *,
    tags: Iterable[str],
    marketing_consents: Iterable[bool],
    interactions: Mapping[str, int],
    a_product_views: int,
) -> tuple[str, str]:
    """A–D pipeline grade of a prospect [004] and why.

    Staff judgement wins (a ``prospect:A``…``prospect:D`` tag: intent *and means* are rarely
    visible in events). Otherwise D = declined (every marketing consent withdrawn), A = clear
    intent (repeated product views plus a question or a click), B = a need but hesitating (any
    product view, click or support contact), C = latent.
    """
    for tag in sorted(tags):
        if tag.lower().startswith(PROSPECT_TAG_PREFIX):
            grade = tag[len(PROSPECT_TAG_PREFIX) :].strip().upper()
            if grade in {"A", "B", "C", "D"}:
                return grade, f"operator tag {tag!r}"
    decisions = list(marketing_consents)
    if decisions and not any(decisions):
        return "D", "declined: withdrew marketing consent"
    views = interactions.get(InteractionKind.PRODUCT_VIEWED, 0)
    asked = interactions.get(InteractionKind.SUPPORT_CONTACT, 0) + interactions.get(InteractionKind.EMAIL_CLICK, 0)
    if views >= a_product_views and asked:
        return "A", f"clear intent: {views} product views and {asked} question(s) or click(s)"
    if views or asked:
        return "B", "a need, hesitating: looked or asked but has not bought"
    return "C", "latent: known, no sign of intent yet"
