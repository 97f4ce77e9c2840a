# Builds the gateway, its unit tests and the end-to-end test client.
# Called from the repository root:  $(MAKE) -f gateway/gateway.mk all | test-units | clean
# Everything it writes goes under build/gateway/. Outputs are written to a temporary
# name and renamed, so two concurrent builds (e.g. top-level `make` and tests/e2e/run.sh)
# never link a half-written object.
CXX ?= g++
PROTOC ?= protoc
OUT := build/gateway
GEN := $(OUT)/gen

CXXSTD := -std=c++17
WARN := -Wall -Wextra -Wno-unused-parameter -Wno-missing-field-initializers
PG_INCLUDE := $(shell pg_config --includedir 2>/dev/null || echo /usr/include/postgresql)
CPPFLAGS_GW := -I. -Igateway -I$(GEN) -I$(PG_INCLUDE)
OPT := -O2 -g
ASAN := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined

LIBS := -lwebsockets -lev -lpq -lprotobuf -ljwt -lssl -lcrypto -lpthread
TEST_LIBS := -lgtest -lgtest_main -lprotobuf -ljwt -lssl -lcrypto -lpthread

PROTO_SRC := $(GEN)/proto/syncline.pb.cc
PROTO_HDR := $(GEN)/proto/syncline.pb.h

# Every gateway source, and the extension's Postgres-free JSON helpers it shares; main.cpp
# only goes into the server binary.
GW_SHARED_SRCS := extension/json_text.cpp
GW_SRCS := $(sort $(wildcard gateway/*.cpp)) $(GW_SHARED_SRCS)
GW_LIB_SRCS := $(filter-out gateway/main.cpp,$(GW_SRCS))
GW_HDRS := $(wildcard gateway/*.hpp) extension/json_exact.hpp extension/json_text.hpp
# Sources the unit tests link: no libwebsockets or libpq in them.
GW_PURE_SRCS := $(filter gateway/checkpoint.cpp gateway/config.cpp gateway/fanout.cpp gateway/framing.cpp gateway/jwt.cpp gateway/jwks.cpp gateway/pg_text.cpp gateway/powersync.cpp,$(GW_SRCS)) \
                $(GW_SHARED_SRCS)
UNIT_TESTS := $(sort $(wildcard tests/unit/gateway_*_test.cpp))

E2E_SRCS := $(sort $(wildcard tests/e2e/*.cpp))
E2E_HDRS := $(wildcard tests/e2e/*.hpp)
BENCH_SRCS := $(sort $(wildcard bench/gateway_*.cpp))

.PHONY: all test-units clean proto
all: $(OUT)/syncline-gateway $(OUT)/syncline-gateway-asan $(OUT)/gateway_tests \
     $(if $(E2E_SRCS),$(OUT)/e2e_client) $(if $(BENCH_SRCS),$(OUT)/gateway_load)

proto: $(PROTO_HDR)

$(PROTO_SRC) $(PROTO_HDR) &: proto/syncline.proto
	@mkdir -p $(GEN)/proto
	mkdir -p $(GEN)/tmp.$$$$ && $(PROTOC) --cpp_out=$(GEN)/tmp.$$$$ proto/syncline.proto && \
	  mv -f $(GEN)/tmp.$$$$/proto/syncline.pb.cc $(GEN)/tmp.$$$$/proto/syncline.pb.h $(GEN)/proto/ && \
	  rm -rf $(GEN)/tmp.$$$$

# Objects, one set per flavour.
$(OUT)/obj/%.o: %.cpp $(GW_HDRS) $(E2E_HDRS) $(PROTO_HDR)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXSTD) $(WARN) $(OPT) $(CPPFLAGS_GW) -c $< -o $@.tmp.$$$$ && mv -f $@.tmp.$$$$ $@
$(OUT)/obj/proto.pb.o: $(PROTO_SRC)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXSTD) $(OPT) $(CPPFLAGS_GW) -c $< -o $@.tmp.$$$$ && mv -f $@.tmp.$$$$ $@
$(OUT)/asan/%.o: %.cpp $(GW_HDRS) $(PROTO_HDR)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXSTD) $(WARN) $(ASAN) $(CPPFLAGS_GW) -c $< -o $@.tmp.$$$$ && mv -f $@.tmp.$$$$ $@
$(OUT)/asan/proto.pb.o: $(PROTO_SRC)
	@mkdir -p $(dir $@)
	$(CXX) $(CXXSTD) $(ASAN) $(CPPFLAGS_GW) -c $< -o $@.tmp.$$$$ && mv -f $@.tmp.$$$$ $@

$(OUT)/syncline-gateway: $(GW_SRCS:%.cpp=$(OUT)/obj/%.o) $(OUT)/obj/proto.pb.o
	$(CXX) $(OPT) $^ $(LIBS) -o $@.tmp.$$$$ && mv -f $@.tmp.$$$$ $@
$(OUT)/syncline-gateway-asan: $(GW_SRCS:%.cpp=$(OUT)/asan/%.o) $(OUT)/asan/proto.pb.o
	$(CXX) $(ASAN) $^ $(LIBS) -o $@.tmp.$$$$ && mv -f $@.tmp.$$$$ $@

$(OUT)/gateway_tests: $(UNIT_TESTS:%.cpp=$(OUT)/asan/%.o) $(GW_PURE_SRCS:%.cpp=$(OUT)/asan/%.o) \
                      $(OUT)/asan/proto.pb.o
	$(CXX) $(ASAN) $^ $(TEST_LIBS) -o $@.tmp.$$$$ && mv -f $@.tmp.$$$$ $@

$(OUT)/e2e_client: $(E2E_SRCS:%.cpp=$(OUT)/obj/%.o) $(OUT)/obj/proto.pb.o
	$(CXX) $(OPT) $^ -lwebsockets -lev -lpq -lprotobuf -lssl -lcrypto -lpthread -o $@.tmp.$$$$ && mv -f $@.tmp.$$$$ $@

$(OUT)/gateway_load: $(BENCH_SRCS:%.cpp=$(OUT)/obj/%.o) $(OUT)/obj/tests/e2e/ws_client.o \
                      $(OUT)/obj/proto.pb.o
	$(CXX) $(OPT) $^ -lwebsockets -lev -lpq -lprotobuf -lssl -lcrypto -lpthread -o $@.tmp.$$$$ && mv -f $@.tmp.$$$$ $@

test-units: $(OUT)/gateway_tests
	$(OUT)/gateway_tests

clean:
	rm -rf $(OUT)
