# broker: one image for every role (`broker serve --role all|api|worker`).
FROM python:3.11-slim AS base
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app
RUN useradd --system --create-home --uid 10001 broker
COPY pyproject.toml README.md ./
COPY broker ./broker
COPY sql ./sql
RUN pip install -e .
USER broker
ENV BROKER_HOST=0.0.0.0 BROKER_PORT=8080
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/readyz', timeout=2).status == 200 else 1)"
ENTRYPOINT ["broker"]
CMD ["serve", "--role", "all"]
