# One image for both fly process groups: `evalbot serve` (web) and `evalbot worker`.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    LITELLM_LOCAL_MODEL_COST_MAP=True

# git: `evalbot eval` reads local repositories through it.
RUN apt-get update && apt-get install -y --no-install-recommends git \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 10001 evalbot

WORKDIR /app
COPY pyproject.toml README.md ./
COPY bot ./bot
COPY report_templates ./report_templates
# Editable, so bot/ finds report_templates/ beside it at /app, as in a checkout.
RUN pip install -e .

USER evalbot
EXPOSE 8000
CMD ["evalbot", "serve"]
