"""The shapes the operator API documents: the owning services' own request and response models.

They are imported here, in this one place, so the gateway's OpenAPI document never drifts from
what the services accept and serve (all four ship in one image, so they deploy in step). Request
bodies are checked against them at the edge; what is forwarded is the caller's JSON as sent.
Fields the gateway fills in itself (who acted) are left out of the public request models.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, create_model

from services.ingest.routes_sources import NewSource, SourceView, SourceWithKey
from services.outreach.render import TemplateSpec
from services.outreach.routes.customers import ErasureView as OutreachErasure
from services.outreach.routes.customers import ExportView as OutreachExport
from services.outreach.routes.plans import PlanVersionView, PlanView, PreviewRequest, PreviewView, TestSendRequest
from services.outreach.routes.plans import TestSendView as TestSendResult
from services.outreach.routes.reports import PlanLift, PlanStatusCount, SuppressionPage
from services.outreach.routes.tasks import ResolveRequest, TaskPage, TaskView
from services.outreach.routes.templates import TemplateView
from services.outreach.routes.touches import CancelRequest, TouchDetail, TouchPage, TouchView
from services.scoring.views import (
    ContactRequest,
    ContactView,
    CustomerFileView,
    CustomerPage,
    ModelView,
    NoteRequest,
    NoteView,
    RefitRequest,
    ReportView,
    ScoresView,
    TagsRequest,
    TierOverrideRequest,
)
from services.scoring.views import ErasureView as ScoringErasure

JSONObject = dict[str, Any]


def without(model: type[BaseModel], *names: str, rename: str | None = None) -> type[BaseModel]:
    """``model`` minus fields the gateway sets itself (a plain copy: same types and limits)."""
    fields: dict[str, Any] = {
        name: (field.annotation, field) for name, field in model.model_fields.items() if name not in names
    }
    copy: type[BaseModel] = create_model(rename or model.__name__, __doc__=model.__doc__, **fields)
    return copy


NewNote = without(NoteRequest, "author", rename="NewNote")
CancelTouch = without(CancelRequest, "by", rename="CancelTouch")
ResolveTask = without(ResolveRequest, "by", rename="ResolveTask")
TemplateTexts = without(TemplateSpec, "name", rename="TemplateTexts")

__all__ = [
    "CancelTouch",
    "ContactRequest",
    "ContactView",
    "CustomerFileView",
    "CustomerPage",
    "JSONObject",
    "ModelView",
    "NewNote",
    "NewSource",
    "NoteView",
    "OutreachErasure",
    "OutreachExport",
    "PlanLift",
    "PlanStatusCount",
    "PlanVersionView",
    "PlanView",
    "PreviewRequest",
    "PreviewView",
    "RefitRequest",
    "ReportView",
    "ResolveTask",
    "ScoresView",
    "ScoringErasure",
    "SourceView",
    "SourceWithKey",
    "SuppressionPage",
    "TagsRequest",
    "TaskPage",
    "TaskView",
    "TemplateSpec",
    "TemplateTexts",
    "TemplateView",
    "TestSendRequest",
    "TestSendResult",
    "TierOverrideRequest",
    "TouchDetail",
    "TouchPage",
    "TouchView",
]
