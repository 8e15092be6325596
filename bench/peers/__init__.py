"""Broker beside what a Python team would build instead: a pgqueuer job queue with an aiohttp
worker, the same number of signed POSTs to the same receiver (``make bench-peers``, not in CI).

``bench/peers/run.py`` runs the rounds; ``bench/peers/consumer.py`` is the pgqueuer worker
process. pgqueuer is the optional extra ``peers`` (``pip install -e '.[peers]'``).
"""
