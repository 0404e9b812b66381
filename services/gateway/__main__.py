"""``python -m services.gateway``: run the operator API."""

from services.gateway.api import create_app
from services.gateway.settings import GatewaySettings
from shared.service import serve

if __name__ == "__main__":
    settings = GatewaySettings()
    serve(create_app(settings), settings)
