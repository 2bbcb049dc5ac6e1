# Static, stripped dispenser and etcha (without the embedded etcd server) in a
# scratch image, with the original tool's path /bin/etcd-config-dispenser.
#   docker build --build-arg VERSION=v1.0.0 -t dispenser .
# Then copy /bin/dispenser (or /bin/etcd-config-dispenser) into your image
# (see README.md). test/image proves the final stage with buildah, offline.
FROM golang:1.26 AS build
ARG VERSION=dev
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN sh scripts/build.sh /out/bin "$VERSION"

FROM scratch
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=build /out/bin/ /bin/
ENTRYPOINT ["/bin/dispenser"]
