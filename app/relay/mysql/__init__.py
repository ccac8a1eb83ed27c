"""The MySQL relay (port 13306): mysql-mimic's handshake in front, aiomysql's login behind,
and the relay's own packet loop in between. See session.py."""
