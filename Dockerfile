# kubebridge as a container image: built on the official Swift image with the Swift runtime
# linked in (--static-swift-stdlib), run on Debian slim with only the C libraries it loads.
#   docker build -t kubebridge .
FROM swift:6.3-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libsqlite3-dev librdkafka-dev libnats-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Package.swift ./
RUN swift package resolve
COPY Sources Sources
COPY sinks sinks
COPY Tests Tests
RUN swift build -c release --static-swift-stdlib --product kubebridge \
 && install -D "$(swift build -c release --show-bin-path)/kubebridge" /out/kubebridge

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libsqlite3-0 librdkafka1 libnats3.4 \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/kubebridge /usr/local/bin/kubebridge
# The nonroot user of distroless images; deploy/ runs it read-only with its state on a volume.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/kubebridge"]
CMD ["run", "--config", "/etc/kubebridge/kubebridge.yaml"]
