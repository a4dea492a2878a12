# The dsotp image: one image for `dsotp bridge`, `dsotp worker` and `dsotp api` (the Helm chart
# picks the command). Slim, non-root, no build tools in the final stage.
FROM python:3.11-slim AS build
WORKDIR /src
COPY requirements/runtime.lock ./
# the same lock as scripts/setup.sh: exact versions, checked against their hashes
RUN pip wheel --no-cache-dir --require-hashes --wheel-dir /wheels -r runtime.lock
COPY pyproject.toml README.md ./
COPY dsotp_streams ./dsotp_streams
RUN pip install --no-cache-dir --require-hashes -r runtime.lock \
    && pip wheel --no-cache-dir --no-deps --no-build-isolation --wheel-dir /wheels .

FROM python:3.11-slim
# LightGBM needs the OpenMP runtime
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends libgomp1 \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 dsotp \
    && useradd --system --uid 10001 --gid dsotp --home-dir /app --shell /usr/sbin/nologin dsotp
WORKDIR /app
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links /wheels /wheels/dsotp_streams-*.whl \
    && rm -rf /wheels
COPY agents /etc/dsotp/agents
ENV DSOTP_AGENTS_DIR=/etc/dsotp/agents \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
EXPOSE 8080
ENTRYPOINT ["dsotp"]
CMD ["api"]
