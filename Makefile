# The one test command: README and .ci/run both use `make test`.
.PHONY: test lint build dev

test: lint
	go test -race -count=1 ./...

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...

build:
	go build -o bin/wxgate ./cmd/wxgate

dev:
	go run ./cmd/wxgate dev
