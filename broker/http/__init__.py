"""Outbound HTTP safety: SSRF protection for webhook callback URLs.

:mod:`broker.http.addresses` decides which URLs and addresses are acceptable (registration
time); :mod:`broker.http.connector` enforces the same rule when a connection is made.
"""
