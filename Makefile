# Syncline top-level build.
#   make            build the extension (syncline.so) and the gateway
#   make install    install the extension into the PostgreSQL found by pg_config
#   make test       install missing packages, build everything, run every test
#   make run        throwaway Postgres + example app + gateway (or SYNCLINE_DATABASE_URL)
#   make bench      run the benchmarks in bench/
#   make demo       the workout web app in headless Chromium: two devices of alice, one of bob
# Every target first installs the Debian packages it needs when one is missing
# (scripts/install-deps.sh). Tests, `make run` and the benchmarks use a private
# copy of the PostgreSQL installation under build/pg with the extension
# installed into it (scripts/pgtree.sh), so they need no write access to the
# system's PostgreSQL; `make install` is for your own server.
PG_CONFIG ?= $(shell command -v pg_config 2>/dev/null || echo /usr/lib/postgresql/15/bin/pg_config)
PGXS := $(shell $(PG_CONFIG) --pgxs 2>/dev/null)

PG_SERVER_H := $(shell $(PG_CONFIG) --includedir-server 2>/dev/null)/postgres.h

# The build tools are not there yet (PGXS alone may come with the server
# package, without the server headers): install them, then run the target again.
ifeq ($(and $(wildcard $(PGXS)),$(wildcard $(PG_SERVER_H))),)
all test run demo bench install pgtree units gateway format:
	@bash scripts/install-deps.sh
	@$(MAKE) --no-print-directory $@
else

EXTENSION = syncline
MODULE_big = syncline
EXT_SRCS := $(sort $(wildcard extension/*.cpp))
OBJS = $(EXT_SRCS:.cpp=.o)
DATA = $(sort $(wildcard extension/syncline--*.sql))
SHLIB_LINK += -lstdc++ -lcrypto
PG_CXXFLAGS += -std=c++17 -Wall -Wextra -Wno-register -Wno-unused-parameter -Wno-missing-field-initializers \
  -Wno-cast-function-type -fno-omit-frame-pointer
EXTRA_CLEAN = build

override with_llvm = no
include $(PGXS)

# PGXS knows no header dependencies: every object depends on every header.
$(OBJS): $(wildcard extension/*.hpp)

PGTREE := $(CURDIR)/build/pg
PG_BINDIR := $(shell $(PG_CONFIG) --bindir)
# Resolved when a recipe runs: build/pg may be a link to a copy outside the checkout.
export PGBIN = $(or $(realpath $(PGTREE)),$(PGTREE))$(PG_BINDIR)

.PHONY: deps gateway units regress test run demo bench format clean-gateway pgtree

deps:
	@bash scripts/install-deps.sh

all: deps gateway units

gateway:
	@if [ -f gateway/gateway.mk ]; then $(MAKE) --no-print-directory -j2 -f gateway/gateway.mk all; fi

# GoogleTest binary for the parts of the extension that include no Postgres header.
UNIT_SRCS := $(sort $(wildcard tests/unit/ext_*_test.cpp))
PURE_SRCS := extension/json_text.cpp extension/checksum.cpp extension/op_chunk.cpp
build/unit/extension_tests: $(UNIT_SRCS) $(PURE_SRCS) $(wildcard extension/*.hpp)
	@mkdir -p build/unit
	$(CXX) -std=c++17 -Wall -Wextra -g -O1 -fsanitize=address,undefined -Iextension \
	  $(UNIT_SRCS) $(PURE_SRCS) -lgtest_main -lgtest -lcrypto -lpthread -o $@

build/tests/concurrency: tests/concurrency/concurrency_test.cpp
	@mkdir -p build/tests
	$(CXX) -std=c++17 -Wall -Wextra -g -O2 -I$(shell $(PG_CONFIG) --includedir) $< -lpq -lpthread -o $@

units: build/unit/extension_tests build/tests/concurrency

# The private PostgreSQL copy with this checkout's extension installed.
pgtree: all
	@bash scripts/pgtree.sh "$(PGTREE)"
	@$(MAKE) --no-print-directory install DESTDIR="$(PGTREE)" >/dev/null

test: pgtree
	@bash scripts/run-tests.sh

run: pgtree
	@bash scripts/run.sh

demo: pgtree
	@bash scripts/demo.sh

bench: pgtree
	@bash bench/run.sh
	@bash bench/gateway_bench.sh
	@bash bench/powersync_bench.sh

clean: clean-gateway
clean-gateway:
	@if [ -f gateway/gateway.mk ]; then $(MAKE) --no-print-directory -f gateway/gateway.mk clean; fi

format:
	clang-format -i $(wildcard extension/*.cpp extension/*.hpp gateway/*.cpp gateway/*.hpp client/*.cpp client/*.hpp tests/*/*.cpp bench/*.cpp)

endif
