# The one test command: README and .ci/run both use `make test`.
.PHONY: test lint gotest fuzz jstest bench build dev

test: lint gotest fuzz jstest

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...

gotest:
	go test -race -count=1 ./...

# A short run of the encryptedData decryptor's fuzz target.
fuzz:
	go test -run '^$$' -fuzz FuzzDecrypt -fuzztime 10s ./wechat

# The mini-program client helper, with node's built-in test runner.
jstest:
	node --test clients/

bench:
	go test -run '^$$' -bench . -benchtime 3000x ./proxy ./session

build:
	go build -o bin/wxgate ./cmd/wxgate

dev:
	go run ./cmd/wxgate dev
