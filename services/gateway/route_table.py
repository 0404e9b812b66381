"""Every forwarded route of the operator API: public path, role, owning service and its path.

Reading this table answers "who may do what, and which service does it". Writes are audited
(``before`` names the service's GET for the state before the change); GETs are retried; where a
service records who acted, ``actor`` says where the gateway puts the API key's name.
"""

from __future__ import annotations

from decimal import Decimal

from fastapi.responses import HTMLResponse
from pydantic import AwareDatetime

from services.gateway import schemas as s
from services.gateway.auth import Role
from services.gateway.routing import QueryParam, Route
from shared.contracts import ChurnBand, LifecycleStage, ValueTier

SCORING, OUTREACH, INGEST = "scoring", "outreach", "ingest"
VIEWER, OPERATOR, ADMIN = Role.VIEWER, Role.OPERATOR, Role.ADMIN
I = "/internal/v1"  # noqa: E741 - the services' internal prefix, short so the table reads as a table

PAGE = (QueryParam("limit", int, "page size (1–500)"), QueryParam("offset", int, "items to skip"))
PERIOD = (
    QueryParam("since", AwareDatetime, "from (inclusive), with a time zone"),
    QueryParam("until", AwareDatetime, "to (exclusive), with a time zone"),
)
CUSTOMER_FILTERS = (
    QueryParam("value_tier", ValueTier, "value tier; repeat for several", many=True),
    QueryParam("grade", str, "membership grade (regular, silver, gold, vip); repeatable", many=True),
    QueryParam("stage", LifecycleStage, "lifecycle stage; repeatable", many=True),
    QueryParam("churn_band", ChurnBand, "churn-risk band; repeatable", many=True),
    QueryParam("tag", str, "has every one of these tags; repeatable", many=True),
    QueryParam("clv_min", Decimal, "predicted 12-month CLV at least"),
    QueryParam("clv_max", Decimal, "predicted 12-month CLV at most"),
    QueryParam("last_purchase_from", AwareDatetime, "last purchase at or after"),
    QueryParam("last_purchase_to", AwareDatetime, "last purchase at or before"),
    QueryParam(
        "sort",
        str,
        "customer_id, clv_365, revenue, order_count, last_purchase_at, first_purchase_at, "
        "p_alive or loyalty_index; '-' first for descending",
    ),
    *PAGE,
)
TOUCH_FILTERS = (
    QueryParam(
        "status",
        str,
        "pending_approval, scheduled, sending, sent, suppressed, failed, cancelled, converted; repeatable",
        many=True,
    ),
    QueryParam("plan", str, "care plan; repeatable", many=True),
    QueryParam("customer_id", str, "one customer's touches"),
    QueryParam("due_from", AwareDatetime, "due at or after"),
    QueryParam("due_until", AwareDatetime, "due before"),
    *PAGE,
)
REASON = QueryParam("reason", str, "why; kept in the customer file's history")

CUSTOMER = f"{I}/customers/{{customer_id}}"
TOUCH = f"{I}/touches/{{touch_id}}"
PLAN = f"{I}/care-plans/{{name}}"
TEMPLATE = f"{I}/templates/{{name}}"
SOURCE = f"{I}/sources/{{name}}"
BY = ("query", "by")
BODY_BY = ("body", "by")

# fmt: off
ROUTES: tuple[Route, ...] = (
    # --- customers: the customer file, search, tags, notes, contacts, tier override (scoring) ---
    Route("customers", "GET", "/customers", VIEWER, SCORING, f"{I}/customers", "Search customer files",
          "Filter by value tier, grade, stage, churn band, CLV range, tags and last purchase; paginated and sortable.",
          query=CUSTOMER_FILTERS, response=s.CustomerPage),
    Route("customers", "GET", "/customers/{customer_id}", VIEWER, SCORING, CUSTOMER,
          "The customer file, with scores, predictions and the history of tier and stage changes",
          response=s.CustomerFileView),
    Route("customers", "GET", "/customers/{customer_id}/touches", VIEWER, OUTREACH, f"{CUSTOMER}/touches",
          "The customer's care touches, by due time", response=list[s.TouchView]),
    Route("customers", "POST", "/customers/{customer_id}/tags", OPERATOR, SCORING, f"{CUSTOMER}/tags",
          "Tag the customer", body=s.TagsRequest, response=list[str], before=CUSTOMER, before_field="tags"),
    Route("customers", "DELETE", "/customers/{customer_id}/tags/{tag}", OPERATOR, SCORING, f"{CUSTOMER}/tags/{{tag}}",
          "Remove a tag", query=(REASON,), status_code=204, before=CUSTOMER, before_field="tags"),
    Route("customers", "POST", "/customers/{customer_id}/notes", OPERATOR, SCORING, f"{CUSTOMER}/notes",
          "Add a staff note (preferences, circumstances)", "The note's author is the API key's name.",
          body=s.NewNote, response=s.NoteView, status_code=201, actor=("body", "author")),
    Route("customers", "DELETE", "/customers/{customer_id}/notes/{note_id}", OPERATOR, SCORING,
          f"{CUSTOMER}/notes/{{note_id}}", "Delete a staff note", status_code=204, before=CUSTOMER,
          before_field="notes"),
    Route("customers", "POST", "/customers/{customer_id}/contacts", OPERATOR, SCORING, f"{CUSTOMER}/contacts",
          "Add a contact person (B2B accounts: more than one, so the account does not leave with one person)",
          body=s.ContactRequest, response=s.ContactView, status_code=201),
    Route("customers", "DELETE", "/customers/{customer_id}/contacts/{contact_id}", OPERATOR, SCORING,
          f"{CUSTOMER}/contacts/{{contact_id}}", "Remove a contact person", status_code=204, before=CUSTOMER,
          before_field="contacts"),
    Route("customers", "PUT", "/customers/{customer_id}/tier-override", OPERATOR, SCORING,
          f"{CUSTOMER}/tier-override", "Override the value tier (a reason is required)",
          "For a loyal customer whose revenue is low: the override sticks until released.",
          body=s.TierOverrideRequest, response=s.ScoresView, before=CUSTOMER, before_field="scores"),
    Route("customers", "DELETE", "/customers/{customer_id}/tier-override", OPERATOR, SCORING,
          f"{CUSTOMER}/tier-override", "Release the tier override (a reason is required)",
          query=(QueryParam("reason", str, "why (at least 3 characters); kept in the history"),),
          response=s.ScoresView, before=CUSTOMER, before_field="scores"),
    # --- touches and operator tasks (outreach) ---
    Route("touches", "GET", "/touches", VIEWER, OUTREACH, f"{I}/touches", "List and filter care touches",
          "Newest due first.", query=TOUCH_FILTERS, response=s.TouchPage),
    Route("touches", "GET", "/touches/{touch_id}", VIEWER, OUTREACH, TOUCH, "One care touch with its send attempts",
          response=s.TouchDetail),
    Route("touches", "POST", "/touches/{touch_id}/approve", OPERATOR, OUTREACH, f"{TOUCH}/approve",
          "Approve a touch waiting for approval (its offer is above the plan's approval limit)",
          response=s.TouchView, before=TOUCH, actor=BODY_BY),
    Route("touches", "POST", "/touches/{touch_id}/cancel", OPERATOR, OUTREACH, f"{TOUCH}/cancel",
          "Cancel a touch that has not been sent", body=s.CancelTouch, body_required=False,
          response=s.TouchView, before=TOUCH, actor=BODY_BY),
    Route("operator tasks", "GET", "/operator-tasks", VIEWER, OUTREACH, f"{I}/tasks",
          "Operator tasks (complaint recovery escalates to a person), most urgent first",
          query=(QueryParam("status", str, "open or resolved"), QueryParam("customer_id", str), *PAGE),
          response=s.TaskPage),
    Route("operator tasks", "POST", "/operator-tasks/{task_id}/resolve", OPERATOR, OUTREACH,
          f"{I}/tasks/{{task_id}}/resolve", "Resolve an operator task, saying what was done",
          body=s.ResolveTask, response=s.TaskView, actor=BODY_BY),
    Route("touches", "GET", "/suppressions", VIEWER, OUTREACH, f"{I}/suppressions",
          "Suppressed touches with their reason (consent, quiet hours, caps, holdout…), newest first",
          query=(QueryParam("customer_id", str), QueryParam("plan", str), QueryParam("reason", str),
                 PERIOD[0], *PAGE),
          response=s.SuppressionPage),
    # --- care plans, templates, preview and test send (outreach) ---
    Route("care plans", "GET", "/care-plans", VIEWER, OUTREACH, f"{I}/care-plans", "Care plans in force",
          query=(QueryParam("include_deleted", bool),), response=list[s.PlanView]),
    Route("care plans", "POST", "/care-plans", OPERATOR, OUTREACH, f"{I}/care-plans", "Create a care plan",
          "The body is the plan's definition (see docs/outreach.md); it is validated in full.",
          body=s.JSONObject, response=s.PlanView, status_code=201, actor=BY),
    Route("care plans", "GET", "/care-plans/{name}", VIEWER, OUTREACH, PLAN, "One care plan", response=s.PlanView),
    Route("care plans", "GET", "/care-plans/{name}/versions", VIEWER, OUTREACH, f"{PLAN}/versions",
          "Every version of a care plan, newest first", response=list[s.PlanVersionView]),
    Route("care plans", "PUT", "/care-plans/{name}", OPERATOR, OUTREACH, PLAN,
          "Replace a care plan (kept as a new version)", body=s.JSONObject, response=s.PlanView, before=PLAN,
          actor=BY),
    Route("care plans", "DELETE", "/care-plans/{name}", OPERATOR, OUTREACH, PLAN,
          "Delete a care plan (its history is kept)", status_code=204, before=PLAN, actor=BY),
    Route("care plans", "POST", "/care-plans/{name}/preview", VIEWER, OUTREACH, f"{PLAN}/preview",
          "Render the plan's message for a real customer in a locale, without sending",
          body=s.PreviewRequest, response=s.PreviewView, idempotent=True, audited=False),
    Route("care plans", "POST", "/care-plans/{name}/test-send", OPERATOR, OUTREACH, f"{PLAN}/test-send",
          "Send the rendered message to a test address", body=s.TestSendRequest, response=s.TestSendResult),
    Route("templates", "GET", "/templates", VIEWER, OUTREACH, f"{I}/templates", "Message templates",
          response=list[s.TemplateView]),
    Route("templates", "POST", "/templates", OPERATOR, OUTREACH, f"{I}/templates",
          "Create a template (subject and body per locale, Jinja2)", body=s.TemplateSpec, response=s.TemplateView,
          status_code=201, actor=BY),
    Route("templates", "GET", "/templates/{name}", VIEWER, OUTREACH, TEMPLATE, "One template",
          response=s.TemplateView),
    Route("templates", "PUT", "/templates/{name}", OPERATOR, OUTREACH, TEMPLATE,
          "Replace a template's texts (kept as a new version)", body=s.TemplateTexts, response=s.TemplateView,
          before=TEMPLATE, actor=BY),
    Route("templates", "DELETE", "/templates/{name}", OPERATOR, OUTREACH, TEMPLATE,
          "Delete a template no care plan uses", status_code=204, before=TEMPLATE),
    # --- models (scoring) ---
    Route("models", "GET", "/models/clv", VIEWER, SCORING, f"{I}/models/clv",
          "The BG/NBD and Gamma-Gamma parameters in force, with fit time, data size, time unit and "
          "log-likelihood", response=s.ModelView),
    Route("models", "POST", "/models/clv/refit", ADMIN, SCORING, f"{I}/models/clv/refit",
          "Refit the CLV models now, optionally on the purchase history up to `as_of`",
          "Answers once the new parameters are in force, so a calibration / holdout split can be evaluated.",
          body=s.RefitRequest, body_required=False, response=s.ModelView, before=f"{I}/models/clv", slow=True),
    # --- reports ---
    Route("reports", "GET", "/reports/tiers", VIEWER, SCORING, f"{I}/reports/tiers",
          "Customers, net revenue and CLV per value tier", response=s.ReportView),
    Route("reports", "GET", "/reports/grades", VIEWER, SCORING, f"{I}/reports/grades",
          "Customers per membership grade", response=s.ReportView),
    Route("reports", "GET", "/reports/stages", VIEWER, SCORING, f"{I}/reports/stages",
          "The lifecycle stage funnel", response=s.ReportView),
    Route("reports", "GET", "/reports/churn-bands", VIEWER, SCORING, f"{I}/reports/churn-bands",
          "Customers and CLV at risk per churn band", response=s.ReportView),
    Route("reports", "GET", "/reports/quadrants", VIEWER, SCORING, f"{I}/reports/quadrants",
          "The satisfaction × loyalty quadrant", response=s.ReportView),
    Route("reports", "GET", "/reports/relationships", VIEWER, SCORING, f"{I}/reports/relationships",
          "Relationship types (Kotler)", response=s.ReportView),
    Route("reports", "GET", "/reports/touches", VIEWER, OUTREACH, f"{I}/reports/touches",
          "Touches by care plan and status (by due time)", query=PERIOD, response=list[s.PlanStatusCount]),
    Route("reports", "GET", "/reports/lift", VIEWER, OUTREACH, f"{I}/reports/lift",
          "Conversion and lift per care plan against its holdout", query=PERIOD, response=list[s.PlanLift]),
    # --- sources and write keys for ingest ---
    Route("sources", "GET", "/sources", ADMIN, INGEST, f"{I}/sources", "Event sources and whether they may send",
          response=list[s.SourceView]),
    Route("sources", "POST", "/sources", ADMIN, INGEST, f"{I}/sources",
          "Create a source; the answer holds its write key, this once", body=s.NewSource,
          response=s.SourceWithKey, status_code=201),
    Route("sources", "GET", "/sources/{name}", ADMIN, INGEST, SOURCE, "One source", response=s.SourceView),
    Route("sources", "POST", "/sources/{name}/rotate", ADMIN, INGEST, f"{SOURCE}/rotate",
          "Give a source a new write key (shown this once); the old one stops working at once",
          response=s.SourceWithKey, before=SOURCE),
    Route("sources", "POST", "/sources/{name}/disable", ADMIN, INGEST, f"{SOURCE}/disable",
          "Refuse the source's events", response=s.SourceView, before=SOURCE),
    Route("sources", "POST", "/sources/{name}/enable", ADMIN, INGEST, f"{SOURCE}/enable",
          "Accept the source's events again", response=s.SourceView, before=SOURCE),
    # --- public: the unsubscribe link in every marketing message (no API key) ---
    Route("public", "GET", "/public/v1/unsubscribe/{token}", None, OUTREACH, "/public/v1/unsubscribe/{token}",
          "Unsubscribe page (the link in a message)", prefix="", response_class=HTMLResponse),
    Route("public", "POST", "/public/v1/unsubscribe/{token}", None, OUTREACH, "/public/v1/unsubscribe/{token}",
          "Unsubscribe (RFC 8058 one-click)", prefix="", response_class=HTMLResponse),
)
# fmt: on
