// Package soak holds wxgate's soak test: two gateway replicas (the built
// binary, as an operator runs it) on a real redis-server, the WeChat
// simulator and an upstream that misbehaves on a schedule, driven by
// browsers and app token pairs while WeChat, Redis, the upstream and a
// replica fail in turn. It proves that every failure a user sees is one
// that was not the gateway's to avoid.
//
//	SOAK=60s go test -v -run Soak ./soak    (make soak; CI runs 60 s)
//
// Everything runs on 127.0.0.1 and is bounded in time and requests.
package soak
