"""``python -m services.outreach``: run the outreach process (internal API + consumer)."""

from services.outreach.api import create_app
from services.outreach.settings import OutreachSettings
from shared.service import serve

if __name__ == "__main__":
    settings = OutreachSettings()
    serve(create_app(settings), settings)
