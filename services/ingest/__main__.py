"""``python -m services.ingest``: run the intake API."""

from services.ingest.api import create_app
from services.ingest.settings import IngestSettings
from shared.service import serve

if __name__ == "__main__":
    settings = IngestSettings()
    serve(create_app(settings), settings)
