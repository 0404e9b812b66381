"""``python -m services.ingest``: run the intake API (``HUITOU_INGEST_WORKERS`` processes)."""

from services.ingest.api import create_app, serve_workers, tune_gc
from services.ingest.settings import IngestSettings
from shared.service import serve

if __name__ == "__main__":
    settings = IngestSettings()
    if settings.workers > 1:
        serve_workers(settings)
    else:
        app = create_app(settings)
        tune_gc(settings)
        serve(app, settings)
