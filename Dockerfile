# redis-recsys: Redis 7.4 with the module, ONNX Runtime and the `recsys` tool.
#
#   docker build -t redis-recsys .
#   docker compose up            (see docker-compose.yml)
#
# The build stage runs scripts/setup.sh, the same setup `.ci/run` runs
# (tests/docker.rs checks that they stay the same), on Debian 12 like CI.
FROM rust:1.95-bookworm AS build
RUN apt-get update -q \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      redis-server redis-tools libclang-dev clang python3 python3-venv lld \
 && rm -rf /var/lib/apt/lists/*
RUN rustup target add wasm32-wasip2
WORKDIR /src
COPY . .
RUN scripts/setup.sh \
 && mkdir -p /out/modules /out/plugins \
 && cp target/release/librecsys.so /out/modules/ \
 && cp "$(scripts/ort-venv.sh)" /out/modules/libonnxruntime.so \
 && cp target/release/recsys /out/recsys \
 && cp plugins/dist/*.wasm /out/plugins/

FROM redis:7.4-bookworm
COPY --from=build /out/modules/ /usr/local/lib/redis/modules/
COPY --from=build /out/recsys /usr/local/bin/recsys
COPY --from=build /out/plugins/ /usr/local/share/recsys/plugins/
COPY docker/redis.conf /usr/local/etc/redis/redis.conf
COPY docker/entrypoint.sh /usr/local/bin/recsys-entrypoint.sh
VOLUME /data
EXPOSE 6379
HEALTHCHECK --interval=5s --timeout=3s --retries=20 CMD ["/usr/local/bin/recsys-entrypoint.sh", "health"]
ENTRYPOINT ["/usr/local/bin/recsys-entrypoint.sh"]
CMD ["server"]
