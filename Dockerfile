# syntax=docker/dockerfile:1
# The licensing service. Multi-stage: compile with dev dependencies, ship only the runtime.
#
#   docker build -t licensing .
#   docker run --read-only -v licensing-data:/data -p 50051:50051 -p 8080:8080 licensing
#
# The runtime runs as an unprivileged numeric user (Kubernetes' runAsNonRoot can only verify a
# numeric USER), with a read-only root filesystem: the only writes go to DATA_DIR (/data: the
# embedded database, the generated admin token and signing secret, the metering spool).
# test/deploy/dockerfile.test.ts checks this file against the repository, since CI has no
# Docker engine.

ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src src
COPY migrations migrations
RUN npm run build \
 && npm prune --omit=dev --no-audit --no-fund \
 && find dist -name '*.map' -delete

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    GRPC_PORT=50051 \
    HTTP_PORT=8080 \
    DATA_DIR=/data
WORKDIR /app
# Read-only for the service user: root owns the code, the user only reads it.
COPY --from=build /app/package.json ./package.json
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY examples ./examples
COPY schemas ./schemas
# The only writable path. 1000 is the "node" user of the official image.
RUN mkdir -p /data && chown 1000:1000 /data && chmod 0700 /data
VOLUME ["/data"]
USER 1000:1000
EXPOSE 50051 8080
# Liveness (not /readyz): a replica serving from memory through a PostgreSQL outage is healthy.
HEALTHCHECK --interval=10s --timeout=3s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch(`http://127.0.0.1:${process.env.HTTP_PORT}/healthz`).then(r => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
STOPSIGNAL SIGTERM
# The Node flags of package.json's config.nodeFlags (what `npm start` and the bench pass): a 32 MiB
# young generation, so the objects of requests in flight die young instead of being promoted
# under load (bench/README.md, "Why repetitions vary").
ENTRYPOINT ["node", "--max-semi-space-size=32", "dist/src/cli/main.js"]
CMD ["serve"]
