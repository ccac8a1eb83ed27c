"""Protocol relays for databases and SSH: `airlock relay` (see server.py)."""
