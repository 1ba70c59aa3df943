# syntax=docker/dockerfile:1
# One image for the four services: `docker run <image> user-service` (or transaction-command-service,
# transaction-query-service, transaction-service). Node 24 runs the TypeScript sources directly
# (type stripping), so there is no build step: the image holds the sources, the SQL migrations and
# the production dependencies from the lockfile.

ARG NODE_IMAGE=node:24-bookworm-slim

FROM ${NODE_IMAGE} AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# Exactly the lockfile's versions, without dev packages or install scripts.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
  && npm cache clean --force

FROM ${NODE_IMAGE} AS runtime
# Listen on the container's interfaces; which ports are reachable is the platform's choice.
ENV HOST=0.0.0.0 \
  INTERNAL_HOST=0.0.0.0
# The repository's layout, so that the entry points and migrations sit where the tests start them.
WORKDIR /app
COPY --from=deps --chown=root:root /app/node_modules ./node_modules
COPY --chown=root:root package.json package-lock.json ./
COPY --chown=root:root packages ./packages
COPY --chown=root:root services ./services
COPY --chown=root:root --chmod=755 scripts/deploy/entrypoint.sh ./scripts/deploy/entrypoint.sh
COPY --chown=root:root scripts/deploy/healthcheck.ts ./scripts/deploy/healthcheck.ts
# The code belongs to root and is read-only to the unprivileged user `node` (uid 1000) that runs it.
USER 1000:1000
EXPOSE 8000 8001 8002 8003 9000 9001 9002 9003
HEALTHCHECK --interval=10s --timeout=5s --start-period=60s --retries=3 \
  CMD ["node", "scripts/deploy/healthcheck.ts"]
ENTRYPOINT ["scripts/deploy/entrypoint.sh"]
CMD ["transaction-service"]
