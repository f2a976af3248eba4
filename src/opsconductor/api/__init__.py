"""The REST API (SPEC section 10): ASGI app under ``/api/v1``, served by uvicorn."""
