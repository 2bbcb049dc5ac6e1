# Static, stripped dispenser and etcha without the embedded etcd server.
#   docker build -t dispenser .
# Then copy /bin/dispenser into your image (see README.md).
FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -tags noembed -o /out/dispenser ./cmd/dispenser \
 && CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/etcha ./cmd/etcha

FROM scratch
COPY --from=build /out/dispenser /bin/dispenser
COPY --from=build /out/etcha /bin/etcha
ENTRYPOINT ["/bin/dispenser"]
