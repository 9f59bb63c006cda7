# The gateway image used by docker-compose.yml. Debian bookworm, like the development machines.
FROM python:3.11-slim-bookworm
RUN apt-get update \
    && apt-get install -y --no-install-recommends libmagic1 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY pyproject.toml README.md alembic.ini babel.cfg ./
COPY gateway gateway
COPY storage storage
COPY web web
COPY templates templates
COPY locale locale
# Editable, so the package finds templates/ and locale/ beside it.
RUN pip install --no-cache-dir -e .
ENV HELPDESK_VAR_DIR=/var/lib/helpdesk \
    HELPDESK_SMTP_HOST=0.0.0.0 \
    HELPDESK_WEB_HOST=0.0.0.0
EXPOSE 2525 8000
# Production: no demo data, and serve refuses to start without a real HELPDESK_SECRET_KEY.
CMD ["sh", "-c", "helpdesk db upgrade && helpdesk serve"]
