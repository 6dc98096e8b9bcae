"""Web assets served by the HTTP API (console, admin and widget arrive with the web issue)."""
