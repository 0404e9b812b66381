"""``python -m services.scoring``: run the scoring process (internal API + event consumer)."""

from services.scoring.api import create_app
from services.scoring.settings import ScoringSettings
from shared.service import serve

if __name__ == "__main__":
    settings = ScoringSettings()
    serve(create_app(settings), settings)
