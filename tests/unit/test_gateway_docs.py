"""docs/gateway.md's table of routes and roles says what the gateway really does."""

from __future__ import annotations

import re
from pathlib import Path

from services.gateway.api import create_app
from services.gateway.settings import GatewaySettings

DOC = Path(__file__).resolve().parents[2] / "docs" / "gateway.md"
ROW = re.compile(r"^\| (GET|POST|PUT|DELETE) \| `([^`]+)` \| (\w+) \|", re.MULTILINE)


def test_the_documented_roles_are_the_enforced_roles(tmp_path: Path) -> None:
    app = create_app(GatewaySettings(database_url=f"sqlite+aiosqlite:///{tmp_path / 'g.db'}"))
    served = {
        (method.upper(), path, operation["x-required-role"])
        for path, operations in app.openapi()["paths"].items()
        for method, operation in operations.items()
    }
    documented = set(ROW.findall(DOC.read_text(encoding="utf-8")))
    assert documented == served, {"undocumented": served - documented, "not served": documented - served}
