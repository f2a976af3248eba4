"""The REST API: ASGI app under ``/api/v1``, served by uvicorn."""
