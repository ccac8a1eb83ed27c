"""The SSH relay: exec, interactive shells and SFTP through the gate (server.py)."""
