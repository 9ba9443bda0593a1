"""The dashboard (``GET /ui``): static pages served from the package (``pages``), the JSON API they
read (``api``, under ``/ui/api/``), and what it reads of the ledger (``usage``). docs/dashboard.md
documents the API."""
