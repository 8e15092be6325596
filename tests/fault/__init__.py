"""Fault-injection tests: real ``broker serve`` processes killed, drained and cut off from
PostgreSQL. Marked ``fault``; run apart with ``pytest -m fault``."""
