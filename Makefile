# Chroma: `make test` and `make bench` are all a new machine needs.
SWIFT ?= swift
CC ?= cc
PEER_DIR := .build/peers

.PHONY: setup build test tsan bench examples peers clean

# Installs libevent-dev only when pkg-config cannot find libevent_pthreads. Idempotent.
setup:
	@if ! command -v pkg-config >/dev/null 2>&1 || ! pkg-config --exists libevent_pthreads; then \
		echo "installing libevent-dev (and pkg-config)"; \
		SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
		$$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libevent-dev pkg-config; \
	fi

build: setup
	$(SWIFT) build

test: setup
	$(SWIFT) test --disable-swift-testing

# ThreadSanitizer; stress tests scale their counts down (CHROMA_TSAN=1), never to triviality.
tsan: setup
	CHROMA_TSAN=1 $(SWIFT) test --disable-swift-testing --sanitize=thread --scratch-path .build-tsan

examples: setup
	$(SWIFT) build -c release --product chroma-ticker
	$(SWIFT) build -c release --product chroma-copy
	$(SWIFT) build -c release --product chroma-copy-async
	$(SWIFT) build -c release --product chroma-echo

# Peers: the raw-C libevent program the dispatch table compares against, and the SwiftNIO
# package the hop table compares against (its own package; its first build takes a few
# minutes, and the hop table simply skips it if it cannot be built).
NIO_HOP := Benchmarks/peers/nio-hop/.build/release/nio-hop
peers: setup
	@mkdir -p $(PEER_DIR)
	$(CC) -O2 -o $(PEER_DIR)/c-dispatch Benchmarks/peers/c-libevent/dispatch.c \
		$$(pkg-config --cflags --libs libevent_pthreads) -lpthread
	$(CC) -O2 -o $(PEER_DIR)/c-echo Benchmarks/peers/c-libevent/echo.c \
		$$(pkg-config --cflags --libs libevent_pthreads) -lpthread
	@echo "building the SwiftNIO peer (Benchmarks/peers/nio-hop)"
	@cd Benchmarks/peers/nio-hop && $(SWIFT) build -c release >/dev/null 2>&1 || echo "nio-hop peer not built; the hop table will skip it"

# The default suite: release build, then the dispatch, disk, hop and echo tables.
bench: setup peers
	$(SWIFT) build -c release --product chroma-bench
	$$($(SWIFT) build -c release --show-bin-path)/chroma-bench dispatch --c-peer $(PEER_DIR)/c-dispatch
	$$($(SWIFT) build -c release --show-bin-path)/chroma-bench disk --node-peer Benchmarks/peers/node/disk.js
	$$($(SWIFT) build -c release --show-bin-path)/chroma-bench hop --nio-peer $(NIO_HOP)
	$$($(SWIFT) build -c release --show-bin-path)/chroma-bench echo --c-peer $(PEER_DIR)/c-echo

clean:
	rm -rf .build .build-tsan Benchmarks/peers/nio-hop/.build
