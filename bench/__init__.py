"""broker's benchmark: ``python -m bench.run [--quick] [--tiny]`` (``make bench``).

It starts its own database, broker processes and an HTTP receiver, drives real HTTP traffic on
127.0.0.1 and prints one JSON object on its last line. See ``bench/README.md``.
"""
