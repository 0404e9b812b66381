"""The gateway composes the other services' APIs from their models, not their engines: building
its app must not load the scoring maths (numpy, scipy), which would cost every gateway replica
memory and start-up time for code it never runs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_the_gateway_does_not_load_the_scoring_maths() -> None:
    probe = (
        "import sys\n"
        "from services.gateway.api import create_app\n"
        "from services.gateway.settings import GatewaySettings\n"
        "create_app(GatewaySettings(database_url='sqlite+aiosqlite:///:memory:')).openapi()\n"
        "print(sorted(m for m in ('numpy', 'scipy', 'pandas') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", result.stdout
