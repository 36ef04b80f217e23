# Chroma: `make test` and `make bench` are all a new machine needs.
SWIFT ?= swift
CC ?= cc
PEER_DIR := .build/peers

.PHONY: setup build test tsan asan fuzz soak bench bench-tools examples peers clean

# Installs libevent-dev only when pkg-config cannot find libevent_pthreads, libssl-dev (for
# HTTPS) only when it cannot find libevent_openssl and openssl, and curl and the openssl CLI
# (the HTTP tests' client and certificate maker) only when missing. Idempotent.
setup:
	@missing=""; \
	{ command -v pkg-config >/dev/null 2>&1 && pkg-config --exists libevent_pthreads; } || missing="$$missing libevent-dev pkg-config"; \
	{ command -v pkg-config >/dev/null 2>&1 && pkg-config --exists libevent_openssl openssl; } || missing="$$missing libssl-dev"; \
	command -v openssl >/dev/null 2>&1 || missing="$$missing openssl"; \
	command -v curl >/dev/null 2>&1 || missing="$$missing curl"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

build: setup
	$(SWIFT) build

test: setup
	$(SWIFT) test --disable-swift-testing

# ThreadSanitizer; stress tests scale their counts down (CHROMA_TSAN=1), never to triviality.
tsan: setup
	CHROMA_TSAN=1 $(SWIFT) test --disable-swift-testing --sanitize=thread --scratch-path .build-tsan

# AddressSanitizer, at full counts. Leak reports are off: XCTest on Linux keeps every test
# case and teardown block alive, and Swift packs enum tags into pointers' spare bits, which
# LeakSanitizer cannot follow, so its report is mostly false alarms. Leaks are the soak's job.
asan: setup
	ASAN_OPTIONS=detect_leaks=0:detect_stack_use_after_return=1 $(SWIFT) test --disable-swift-testing --sanitize=address --scratch-path .build-asan

# libFuzzer targets (Fuzz/), each run FUZZ_SECONDS (default 60) from its seed corpus in
# Fuzz/Corpus/<name>; what they learn goes to .build-fuzz/corpus/<name>, a finding to
# .build-fuzz/findings/ (and the run fails). Longer runs: make fuzz FUZZ_SECONDS=600; one
# target: make fuzz FUZZ_TARGETS=resp. SwiftPM's --sanitize=fuzzer links libFuzzer's main;
# the Swift flags come as one -sanitize=fuzzer,address because swiftc keeps only the last
# of several -sanitize= flags and the order of SwiftPM's own is not fixed.
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= http-head static-path line-framing resp
FUZZ_BUILD := .build-fuzz
fuzz: setup
	for t in $(FUZZ_TARGETS); do \
		CHROMA_FUZZ=1 $(SWIFT) build --sanitize=fuzzer -Xswiftc -sanitize=fuzzer,address --scratch-path $(FUZZ_BUILD) --product fuzz-$$t || exit 1; \
	done
	@mkdir -p $(FUZZ_BUILD)/findings
	@for t in $(FUZZ_TARGETS); do \
		mkdir -p $(FUZZ_BUILD)/corpus/$$t; \
		echo "fuzzing $$t for $(FUZZ_SECONDS) s"; \
		SWIFT_BACKTRACE=enable=no ASAN_OPTIONS=detect_leaks=0 $(FUZZ_BUILD)/debug/fuzz-$$t \
			-max_total_time=$(FUZZ_SECONDS) -timeout=30 -print_final_stats=1 -artifact_prefix=$(FUZZ_BUILD)/findings/$$t- \
			$(FUZZ_BUILD)/corpus/$$t Fuzz/Corpus/$$t > $(FUZZ_BUILD)/$$t.log 2>&1; \
		status=$$?; \
		grep -E "^#[0-9]+[[:space:]]+DONE|^stat::(number_of_executed_units|average_exec_per_sec)" $(FUZZ_BUILD)/$$t.log; \
		if [ $$status -ne 0 ]; then tail -40 $(FUZZ_BUILD)/$$t.log; echo "fuzz-$$t found a failure: see $(FUZZ_BUILD)/findings"; exit 1; fi; \
	done

# The soak (not in CI): SOAK_MINUTES (default 30) of mixed load on release builds of
# chroma-httpd, chroma-echo and chroma-kv; fails on memory or descriptor growth or a lost answer.
SOAK_MINUTES ?= 30
soak: setup
	$(SWIFT) build -c release --product chroma-bench
	$(SWIFT) build -c release --product chroma-httpd
	$(SWIFT) build -c release --product chroma-echo
	$(SWIFT) build -c release --product chroma-kv
	$$($(SWIFT) build -c release --show-bin-path)/chroma-bench soak --minutes $(SOAK_MINUTES)

examples: setup
	$(SWIFT) build -c release --product chroma-ticker
	$(SWIFT) build -c release --product chroma-copy
	$(SWIFT) build -c release --product chroma-copy-async
	$(SWIFT) build -c release --product chroma-echo
	$(SWIFT) build -c release --product chroma-httpd
	$(SWIFT) build -c release --product chroma-kv

# Peers: the raw-C libevent programs the dispatch, echo and http tables compare against, and
# the SwiftNIO package (nio-hop for the hop table, nio-http and the Hummingbird 2 hb-http for
# the http table; its own
# package, its first build takes a few minutes, and those tables simply skip it if it cannot
# be built).
NIO_DIR := Benchmarks/peers/swiftnio
NIO_HOP := $(NIO_DIR)/.build/release/nio-hop
NIO_HTTP := $(NIO_DIR)/.build/release/nio-http
HB_HTTP := $(NIO_DIR)/.build/release/hb-http
peers: setup
	@mkdir -p $(PEER_DIR)
	$(CC) -O2 -o $(PEER_DIR)/c-dispatch Benchmarks/peers/c-libevent/dispatch.c \
		$$(pkg-config --cflags --libs libevent_pthreads) -lpthread
	$(CC) -O2 -o $(PEER_DIR)/c-echo Benchmarks/peers/c-libevent/echo.c \
		$$(pkg-config --cflags --libs libevent_pthreads) -lpthread
	$(CC) -O2 -o $(PEER_DIR)/c-httpd Benchmarks/peers/c-libevent/httpd.c \
		$$(pkg-config --cflags --libs libevent_pthreads) -lpthread
	@echo "building the SwiftNIO peers (nio-hop, nio-http, hb-http in $(NIO_DIR))"
	@cd $(NIO_DIR) && $(SWIFT) build -c release >/dev/null 2>&1 || echo "SwiftNIO peers not built; the hop and http tables will skip their NIO rows"

# wrk and nginx for the http table, redis-server and redis-benchmark for the kv table,
# installed only when missing. Never fails the bench: a table skips the peers it cannot find.
bench-tools:
	@missing=""; \
	command -v wrk >/dev/null 2>&1 || missing="$$missing wrk"; \
	command -v nginx >/dev/null 2>&1 || [ -x /usr/sbin/nginx ] || missing="$$missing nginx-light"; \
	command -v redis-server >/dev/null 2>&1 || missing="$$missing redis-server"; \
	command -v redis-benchmark >/dev/null 2>&1 || missing="$$missing redis-tools"; \
	if [ -n "$$missing" ]; then \
		echo "installing$$missing"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		{ $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; } \
			|| echo "could not install$$missing; the http and kv tables will skip the peers that need it"; \
	fi

# The default suite: release build, then the dispatch, disk, hop, echo, http, steal and kv tables.
bench: setup peers bench-tools
	$(SWIFT) build -c release --product chroma-bench
	$(SWIFT) build -c release --product chroma-httpd
	$(SWIFT) build -c release --product chroma-kv
	$$($(SWIFT) build -c release --show-bin-path)/chroma-bench dispatch --c-peer $(PEER_DIR)/c-dispatch
	$$($(SWIFT) build -c release --show-bin-path)/chroma-bench disk --node-peer Benchmarks/peers/node/disk.js
	$$($(SWIFT) build -c release --show-bin-path)/chroma-bench hop --nio-peer $(NIO_HOP)
	$$($(SWIFT) build -c release --show-bin-path)/chroma-bench echo --c-peer $(PEER_DIR)/c-echo
	$$($(SWIFT) build -c release --show-bin-path)/chroma-bench http --c-peer $(PEER_DIR)/c-httpd --nio-peer $(NIO_HTTP) --hb-peer $(HB_HTTP) --nginx-conf Benchmarks/peers/nginx/nginx.conf
	$$($(SWIFT) build -c release --show-bin-path)/chroma-bench steal
	$$($(SWIFT) build -c release --show-bin-path)/chroma-bench kv

clean:
	rm -rf .build .build-tsan .build-asan .build-fuzz $(NIO_DIR)/.build
