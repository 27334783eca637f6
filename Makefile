# The one test command: README and .ci/run both use `make test`.
.PHONY: test lint gotest deploytest fuzz jstest bench gobench sessionmem build dev soak image

test: lint gotest deploytest fuzz jstest

lint:
	@out=$$(gofmt -l .); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	go vet ./...
	cd deploy/deploytest && go vet ./...

# The allocation bounds (TestHotPathAllocs, TestDecidePlainAllocs) skip
# themselves under the race detector, so they run again without it.
gotest:
	go test -race -count=1 ./...
	go test -count=1 -run 'Allocs$$' ./policies ./proxy

# The Dockerfile (buildkit's parser and linter) and the Kubernetes
# manifests (the API's schemas, strict decoding, wxgate's own config
# checks), offline. A module of its own, so that the Kubernetes libraries
# stay out of wxgate's go.mod; `go test ./...` at the root does not enter it.
deploytest:
	cd deploy/deploytest && go test -count=1 ./...

# A short run of every fuzz target: each parser of untrusted input (paths,
# hosts, header blocks, rd, identity header names, bearer tokens, session
# cookies, stored pending logins, encryptedData), and the memory store's
# packing (every value unpacks to itself). FUZZTIME=1m for longer.
FUZZTIME ?= 5s
FUZZ = ./policies:FuzzParsePath \
	./proxy:FuzzParseHost ./proxy:FuzzCheckHead ./proxy:FuzzSafeRedirect ./proxy:FuzzSpoofable ./proxy:FuzzBearer ./proxy:FuzzConfigCheck \
	./session:FuzzSessionCookie ./session:FuzzPendingRecord ./session:FuzzPack ./session:FuzzMemoryModel \
	./wechat:FuzzDecrypt

fuzz:
	@for t in $(FUZZ); do \
		echo "go test -fuzz $${t#*:} -fuzztime $(FUZZTIME) $${t%%:*}"; \
		go test -run '^$$' -fuzz "^$${t#*:}\$$" -fuzztime $(FUZZTIME) $${t%%:*} >/tmp/wxgate-fuzz.log 2>&1 || { cat /tmp/wxgate-fuzz.log; exit 1; }; \
	done

# The mini-program client helper, with node's built-in test runner.
jstest:
	node --test clients/

# The soak test alone, for longer (CI runs it for 60 s inside gotest):
# two replicas, Redis, the simulator and a misbehaving upstream under
# faults. It prints its report; SOAK_REPORT=FILE also writes it there.
SOAK ?= 10m
soak:
	SOAK=$(SOAK) go test -count=1 -v -timeout 70m -run '^TestSoak$$' ./soak

# The load harness: wrk against the origin, a bare fiber proxy and wxgate
# (memory and Redis stores), one table with ratios to the bare proxy, then
# each row at a fixed half of the bare proxy's rate, p99s compared
# (docs/performance.md). Needs wrk and redis-server.
bench:
	go run ./internal/loadbench $(BENCHFLAGS)

# The Go benchmarks of the hot path.
gobench:
	go test -run '^$$' -bench . -benchtime 3000x ./proxy ./session

# Bytes of live heap per idle session in the memory store, for 100,000
# sessions (issue 10's target: 1 KiB); docs/performance.md.
sessionmem:
	go test -run '^$$' -bench 'BytesPer' -benchtime 100000x ./session

build:
	go build -o bin/wxgate ./cmd/wxgate

# The container image (Dockerfile): a static binary on distroless, as
# user 65532. VERSION defaults to the git description.
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
image:
	docker build --build-arg VERSION=$(VERSION) -t wxgate:$(VERSION) .

dev:
	go run ./cmd/wxgate dev
